#!/usr/bin/env bash
# The web pages' parts from the npm registry, each skipped while nothing it depends on
# changed: the campaign map's libraries (web/map, installed from its lockfile, no build),
# and STAC Browser built into web/stac-browser/dist with the pins and files in
# web/stac-browser (see its README).
set -euo pipefail
self=$(realpath "$0")
cd "$(dirname "$self")/../web/map"
stamp=node_modules/.tilekeeper-installed
wanted=$(cat package.json package-lock.json | sha256sum | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$wanted" ]]; then
  echo "Installing the campaign map's libraries (npm)..."
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
  echo "$wanted" > "$stamp"
fi

cd ../stac-browser
VERSION=4.0.1
stamp=dist/.tilekeeper-built
wanted=$( (echo "$VERSION"; cat package.json package-lock.json basemaps.config.js "$self") | sha256sum | cut -d' ' -f1)
if [[ -f $stamp && $(cat "$stamp") == "$wanted" ]]; then
  exit 0
fi
echo "Building STAC Browser $VERSION (npm, ~3 minutes the first time)..."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack -q "@radiantearth/stac-browser@$VERSION" >/dev/null && tar xzf ./*.tgz)
src=$work/package
cp package.json package-lock.json basemaps.config.js "$src/"
# The runtime configuration the API writes (the catalogue's URL), instead of a baked one.
sed -i 's|    <!-- <script defer="defer" src="/config.js"></script> -->|    <script src="./config.js"></script>|' \
  "$src/public/index.html"
grep -q 'src="./config.js"' "$src/public/index.html"
(cd "$src" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
(cd "$src" && SB_pathPrefix="./" SB_historyMode=hash npm run -s build:minimal >/dev/null)
rm -rf dist
cp -r "$src/dist" dist
rm -f dist/config.js  # served by the API
# The pages' Content-Security-Policy runs no inline script: StreamSaver's download helper
# (mitm.html, framed by STAC Browser for downloads with a key) gets its script as a file.
node -e '
const fs = require("fs");
const page = fs.readFileSync("dist/mitm.html", "utf8");
const inline = /<script>([\s\S]*?)<\/script>/g;
const scripts = [...page.matchAll(inline)];
if (scripts.length !== 1) throw new Error(`mitm.html has ${scripts.length} inline scripts, not 1`);
fs.writeFileSync("dist/mitm.js", scripts[0][1]);
fs.writeFileSync("dist/mitm.html", page.replace(scripts[0][0], "<script src=\"mitm.js\"></script>"));
'
if grep -l '<script>' dist/*.html; then echo "inline script left in STAC Browser's pages" >&2; exit 1; fi
echo "$wanted" > "$stamp"
echo "STAC Browser built into web/stac-browser/dist"
