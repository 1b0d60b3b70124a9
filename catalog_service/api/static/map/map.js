// The campaign map: every tile from the service's vector tiles, coloured by status (zoomed
// out, cells of tiles in their most frequent status); the products as one mosaic drawn by
// titiler under the tiles; a side panel with counts, throughput, ETA and cost; changes
// polled from a cursor and applied to the drawn tiles without reloading them; a click
// shows the tile's job, history and product. Everything comes from this service
// (OpenLayers and Natural Earth from npm).
//
// Values from the catalogue (ids, titles, properties, errors, asset hrefs) reach the page
// as text only: elements are made with make() and filled with textContent, never with
// innerHTML; a link is made only for an http(s) URL (webUrl).
(function () {
  "use strict";
  // The page's configuration, from the service (a data- attribute: no inline script).
  const cfg = JSON.parse(document.getElementById("app").dataset.config);
  const api = cfg.root; // ends with "/"
  const campaign = cfg.campaign;
  const campaignPath = encodeURIComponent(campaign);
  const COLORS = cfg.colors; // status -> CSS colour, from the service
  const POLL_MS = cfg.pollMs || 2000;
  const overrides = new Map(); // tile id -> {status, backend} newer than the vector tiles
  const seen = new Map(); // tile id -> colour it was last drawn with
  const hiddenStatus = new Set();
  const hiddenBackend = new Set();
  const styles = {};
  const outlines = {};
  const cellStyles = {};

  function styleFor(colour) {
    if (!styles[colour]) {
      styles[colour] = new ol.style.Style({
        fill: new ol.style.Fill({ color: colour }),
        stroke: new ol.style.Stroke({ color: "rgba(40,40,40,0.6)", width: 0.5 }),
      });
    }
    return styles[colour];
  }

  // A finished tile over the mosaic: its outline, so its product shows (the fill, all but
  // transparent, keeps it clickable).
  function outlineFor(colour) {
    if (!outlines[colour]) {
      outlines[colour] = new ol.style.Style({
        fill: new ol.style.Fill({ color: "rgba(255,255,255,0.01)" }),
        stroke: new ol.style.Stroke({ color: colour, width: 1.5 }),
      });
    }
    return outlines[colour];
  }

  function cellStyleFor(colour) {
    if (!cellStyles[colour]) {
      cellStyles[colour] = new ol.style.Style({ fill: new ol.style.Fill({ color: colour }) });
    }
    return cellStyles[colour];
  }

  // A tile's style: null when filtered out, its outline when finished over a drawn mosaic.
  function tileStyle(status, backend, resolution) {
    if (hiddenStatus.has(status) || hiddenBackend.has(backend)) return null;
    const colour = COLORS[status] || "white";
    return status === "finished" && mosaicShown(resolution) ? outlineFor(colour) : styleFor(colour);
  }

  function current(feature) {
    const id = feature.getId() ?? feature.get("id");
    const o = overrides.get(id);
    return {
      id: id,
      status: o ? o.status : feature.get("status"),
      backend: o && o.backend ? o.backend : feature.get("backend"),
    };
  }

  // Zoomed out, where tiles are a few pixels wide, they come as cells: vector tiles of
  // squares a few pixels wide, each in the most frequent status of the tiles in it (made
  // by PostGIS; the statuses and back-ends hidden here are left out by the service);
  // zoomed in, as vector footprints.
  const vectorMinZoom = cfg.vectorMinZoom || 0;
  // Each change of the filters asks anew (`v`): back to an earlier filter, OpenLayers
  // mixed the tiles it kept for that URL with those in flight, and cells went missing.
  let filterVersion = 0;
  function cellsUrl() {
    const hidden = [...hiddenStatus].map((s) => `hide_status=${encodeURIComponent(s)}`)
      .concat([...hiddenBackend].map((b) => `hide_backend=${encodeURIComponent(b)}`));
    if (filterVersion > 0) hidden.push(`v=${filterVersion}`);
    return `${api}campaigns/${campaignPath}/cells/{z}/{x}/{y}.pbf` + (hidden.length ? "?" + hidden.join("&") : "");
  }
  let cellTilesLoaded = 0;
  const cellsSource = new ol.source.VectorTile({
    format: new ol.format.MVT(),
    url: cellsUrl(),
    tileSize: 256, // a cell tile's unit is a screen pixel
    maxZoom: Math.max(vectorMinZoom, 0),
    transition: 0,
  });
  cellsSource.on("tileloadend", () => { cellTilesLoaded += 1; });
  const cells = new ol.layer.VectorTile({
    source: cellsSource,
    maxZoom: vectorMinZoom,
    style: function (feature, resolution) {
      const status = feature.get("status");
      // Finished cells over a drawn mosaic: the products show there instead.
      if (status === "finished" && mosaicShown(resolution)) return null;
      return cellStyleFor(COLORS[status] || "white");
    },
  });

  const tiles = new ol.layer.VectorTile({
    declutter: false,
    minZoom: vectorMinZoom,
    source: new ol.source.VectorTile({
      format: new ol.format.MVT({ idProperty: "id" }),
      url: `${api}campaigns/${campaignPath}/tiles/{z}/{x}/{y}.pbf`,
      maxZoom: 12,
    }),
    style: function (feature, resolution) {
      const t = current(feature);
      if (!seen.has(t.id)) seen.set(t.id, COLORS[t.status] || "white");
      if (overrides.has(t.id)) return null; // a changed tile is drawn by the layer of changes
      return tileStyle(t.status, t.backend, resolution);
    },
  });

  // Tiles whose status changed since the vector tiles were made: a small layer of their
  // own, so a change redraws a few features, not the whole campaign.
  const geojson = new ol.format.GeoJSON({ featureProjection: "EPSG:3857" });
  const changedSource = new ol.source.Vector();
  const changedLayer = new ol.layer.Vector({
    source: changedSource,
    style: function (feature, resolution) {
      return tileStyle(feature.get("status"), feature.get("backend"), resolution);
    },
  });

  function applyChange(id, t) {
    overrides.set(id, t);
    seen.set(id, COLORS[t.status] || "white");
    let feature = changedSource.getFeatureById(id);
    if (!feature && t.geometry) {
      feature = new ol.Feature(geojson.readGeometry(t.geometry));
      feature.setId(id);
      changedSource.addFeature(feature);
    }
    if (feature) feature.setProperties({ status: t.status, backend: t.backend });
  }

  const land = new ol.layer.Vector({
    source: new ol.source.Vector({
      url: cfg.countries,
      format: new ol.format.TopoJSON({ layers: ["countries"] }),
      overlaps: false,
    }),
    style: new ol.style.Style({
      fill: new ol.style.Fill({ color: "#f4f1ea" }),
      stroke: new ol.style.Stroke({ color: "#b8b2a7", width: 0.7 }),
    }),
  });

  // The products as one mosaic, drawn by titiler from the campaign's product collection
  // (cfg.mosaic: its TileJSON, when the collection exists, with the collection's default
  // render), above the land and below the tiles. A TileJSON that does not load (404: no
  // raster service) draws nothing. As tiles finish, the mosaic is read again (its TileJSON
  // too, from the collection's current tilejson link: its bounds and render grow with the
  // products), at most every MOSAIC_REFRESH_MS, into a new layer over the old one, which
  // goes once the new one has drawn (no blank in between).
  const MOSAIC_REFRESH_MS = cfg.mosaicRefreshMs || 10000;
  const mosaic = new ol.layer.Group({ layers: [] });
  let showMosaic = true;
  let mosaicReady = false; // a mosaic's TileJSON has loaded
  let mosaicMinZoom = -Infinity; // below it (the TileJSON's minzoom) titiler draws nothing
  let mosaicState = cfg.mosaic ? "loading" : "none";
  let mosaicTilesLoaded = 0;
  let mosaicTileErrors = 0;
  let mosaicRefreshes = 0;
  let mosaicUrl = cfg.mosaic || null;

  function mosaicShown(resolution) {
    if (!showMosaic || !mosaicReady) return false;
    if (resolution === undefined || mosaicMinZoom === -Infinity) return true;
    return map.getView().getZoomForResolution(resolution) > mosaicMinZoom;
  }

  function restyle() {
    tiles.changed();
    cells.changed();
    changedLayer.changed();
  }

  async function loadMosaic() {
    if (!mosaicUrl) return;
    let tileJSON;
    try {
      const response = await fetch(mosaicUrl, { headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error(`${mosaicUrl}: ${response.status}`);
      tileJSON = await response.json();
    } catch (err) {
      if (!mosaicReady) mosaicState = "error"; // no raster service (404), no render (400)
      return; // a layer drawn before stays
    }
    // The grid follows titiler's tiles (`tilesize`, 512 px by default: a quarter of the
    // requests of 256 px tiles), and tiles are asked for only within the TileJSON's bounds
    // (the products' extent) and zooms.
    const first = new URL((tileJSON.tiles || [])[0] || mosaicUrl, mosaicUrl);
    const tileSize = Number(first.searchParams.get("tilesize")) || 256;
    const source = new ol.source.TileJSON({ tileJSON: tileJSON, tileSize: tileSize, crossOrigin: "anonymous" });
    source.on("tileloadend", () => { mosaicTilesLoaded += 1; });
    source.on("tileloaderror", () => { mosaicTileErrors += 1; }); // 204: no product there
    mosaicMinZoom = tileJSON.minzoom > 0 ? tileJSON.minzoom - 0.5 : -Infinity;
    const bounds = Array.isArray(tileJSON.bounds) && tileJSON.bounds.length === 4
      ? ol.proj.transformExtent(tileJSON.bounds, "EPSG:4326", "EPSG:3857") : undefined;
    const older = mosaic.getLayers().getArray().slice();
    mosaic.getLayers().push(new ol.layer.Tile({ source: source, minZoom: mosaicMinZoom, extent: bounds }));
    mosaicState = "ready";
    if (!mosaicReady) {
      mosaicReady = true;
      restyle(); // finished tiles as outlines over their products
    }
    // The layer drawn before goes once this one has drawn: no blank in between.
    if (older.length) {
      map.once("rendercomplete", () => older.forEach((old) => mosaic.getLayers().remove(old)));
    }
  }

  // A tile finished: its product is harvested in the seconds after, so the mosaic is read
  // again twice, MOSAIC_REFRESH_MS / 2 after and MOSAIC_REFRESH_MS later (no more often).
  let mosaicDue = 0;
  let mosaicTimer = null;
  let mosaicLast = -Infinity;
  function mosaicChanged() {
    if (!mosaicUrl) return;
    mosaicDue = 2;
    scheduleMosaic(MOSAIC_REFRESH_MS / 2);
  }
  function scheduleMosaic(delay) {
    if (mosaicTimer !== null || mosaicDue === 0) return;
    const wait = Math.max(delay, mosaicLast + MOSAIC_REFRESH_MS - performance.now());
    mosaicTimer = setTimeout(async () => {
      mosaicDue -= 1;
      mosaicLast = performance.now();
      mosaicRefreshes += 1;
      try {
        const products = await getJSON(`collections/${encodeURIComponent(cfg.products)}`);
        const link = (products.links || []).find((l) => l.rel === "tilejson" && webUrl(l.href));
        if (link) mosaicUrl = webUrl(link.href);
      } catch (err) {
        // the page's TileJSON again
      }
      await loadMosaic();
      mosaicTimer = null;
      scheduleMosaic(0);
    }, wait);
  }

  const map = new ol.Map({
    target: "map",
    layers: [land, mosaic, cells, tiles, changedLayer],
    view: new ol.View({ center: [0, 0], zoom: 2 }),
  });
  // The campaign's extent from the start: no tiles fetched for a view that is not shown.
  if (cfg.bbox) {
    map.getView().fit(ol.proj.transformExtent(cfg.bbox, "EPSG:4326", "EPSG:3857"), {
      size: [document.getElementById("map").clientWidth, document.getElementById("map").clientHeight],
      padding: [20, 20, 20, 20],
    });
  }

  function fmt(x, digits) {
    return x === null || x === undefined ? "–" : Number(x).toFixed(digits ?? 1);
  }
  function duration(s) {
    if (s === null || s === undefined) return "–";
    const h = Math.floor(s / 3600), m = Math.round((s % 3600) / 60);
    return h ? `${h} h ${m} min` : `${m} min`;
  }
  function el(id) { return document.getElementById(id); }

  // An element with attributes (or properties: className, checked, dataset) and children:
  // strings become text nodes, so nothing from the catalogue is read as markup.
  function make(tag, attrs, ...children) {
    const element = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "className") element.className = value;
      else if (name === "dataset") Object.assign(element.dataset, value);
      else if (name === "checked") element.checked = true;
      else element.setAttribute(name, value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      element.append(child instanceof Node ? child : String(child));
    }
    return element;
  }

  // The URL when it is http(s) (resolved against this page), else null: no javascript:,
  // data: or other scheme becomes a link or an image.
  function webUrl(href) {
    if (typeof href !== "string" || !href) return null;
    try {
      const url = new URL(href, window.location.href);
      return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
    } catch (err) {
      return null;
    }
  }

  // A link to an http(s) URL, or just its label otherwise.
  function link(href, label) {
    const url = webUrl(href);
    return url ? make("a", { href: url }, label) : make("span", {}, label);
  }

  function swatch(colour) {
    const box = make("span", { className: "swatch" });
    box.style.background = colour;
    return box;
  }

  function budgetLine(budget) {
    if (budget.credits === null || budget.credits === undefined) {
      return make("span", { id: "budget" }, `spent ${fmt(budget.spent, 2)} credits (no budget)`);
    }
    return make("span", { id: "budget" },
      `spent ${fmt(budget.spent, 2)} of budget ${fmt(budget.credits, 2)} ` +
      `(${fmt(budget.committed, 2)} with active jobs)`,
      budget.reached ? [" ", make("b", { className: "over" }, "budget reached: no new job starts")] : []);
  }

  // The filters' tick boxes live across the panel's refreshes (every poll): a box made
  // anew under a click could swallow it, or take it twice.
  const statusBoxes = new Map();
  const backendBoxes = new Map();
  function filterBox(boxes, key, dataset, checked) {
    if (!boxes.has(key)) boxes.set(key, make("input", { type: "checkbox", dataset: dataset, checked: checked }));
    return boxes.get(key);
  }

  function renderSummary(summary) {
    const backends = Object.keys(summary.by_backend || {}).sort();
    const table = make("table", {},
      make("tr", {}, make("th", {}, "status"), make("th", { className: "n" }, "tiles"),
        backends.map((b) => make("th", { className: "n" }, b))));
    for (const [status, n] of Object.entries(summary.by_status || {})) {
      const box = filterBox(statusBoxes, status, { status: status }, !hiddenStatus.has(status));
      table.append(make("tr", {},
        make("td", {}, make("label", {}, box, swatch(COLORS[status] || "white"), status)),
        make("td", { className: "n" }, n),
        backends.map((b) => make("td", { className: "n" }, (summary.by_backend[b] || {})[status] || ""))));
    }
    el("counts").replaceChildren(table);
    el("figures").replaceChildren(
      make("div", {}, `progress ${summary.done}/${summary.tiles}`),
      make("div", {}, `throughput ${fmt(summary.throughput_per_hour)} tiles/h`),
      make("div", {}, `ETA ${duration(summary.eta_s)}`),
      make("div", {}, `mean cost ${fmt((summary.finished || {}).mean_costs, 2)}, projected ${fmt(summary.projected_costs, 0)}`),
      make("div", {}, budgetLine(summary.budget || {})));
    el("backends").replaceChildren(...backends.map((b) => make("label", {},
      filterBox(backendBoxes, b, { backend: b }, !hiddenBackend.has(b)), b)));
  }

  function renderLegend() {
    el("legend").replaceChildren(...Object.entries(COLORS).map(([s, c]) => make("div", {}, swatch(c), s)));
  }

  document.addEventListener("change", (event) => {
    const box = event.target;
    if (box.dataset.status) {
      box.checked ? hiddenStatus.delete(box.dataset.status) : hiddenStatus.add(box.dataset.status);
    } else if (box.dataset.backend !== undefined) {
      box.checked ? hiddenBackend.delete(box.dataset.backend) : hiddenBackend.add(box.dataset.backend);
    } else {
      return;
    }
    restyle();
    filterVersion += 1;
    cellsSource.setUrl(cellsUrl());
  });

  async function getJSON(path) {
    const response = await fetch(api + path, { headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`${path}: ${response.status}`);
    return response.json();
  }

  // The history's position when the page was made: the vector tiles show at least that.
  let cursor = cfg.cursor;
  async function poll() {
    window.tilekeeperMap.pollStarted = performance.now();
    try {
      const feed = await getJSON(`campaigns/${campaignPath}/map/changes?since=${cursor}`);
      const fresh = Object.entries(feed.tiles);
      cursor = feed.cursor;
      if (fresh.length) {
        const started = window.tilekeeperMap.pollStarted;
        map.once("rendercomplete", () => {
          window.tilekeeperMap.lastUpdateMs = performance.now() - started;
        });
        // Drawn over the base layer's (now outdated) footprints, which are not re-rendered.
        for (const [id, t] of fresh) applyChange(id, t);
        if (fresh.some(([, t]) => t.status === "finished")) mosaicChanged();
        renderSummary(await getJSON(`campaigns/${campaignPath}/summary`));
      }
      el("updated").textContent = `live: cursor ${cursor}, ${new Date().toLocaleTimeString()}`;
      window.tilekeeperMap.polls += 1;
      setTimeout(poll, feed.more ? 0 : POLL_MS);
    } catch (err) {
      el("updated").textContent = `waiting for the service (${err.message})`;
      setTimeout(poll, POLL_MS * 2);
    }
  }

  async function showTile(id) {
    const [item, history] = await Promise.all([
      getJSON(`collections/${campaignPath}/items/${encodeURIComponent(id)}`),
      getJSON(`campaigns/${campaignPath}/jobs/${encodeURIComponent(id)}/history`),
    ]);
    const p = item.properties;
    const product = p["tilekeeper:product"] || {};
    const parts = [
      make("h2", {}, id),
      make("table", {}, ["status", "backend_name", "openeo:job_id", "attempts", "start_time", "running_start_time", "finish_time", "costs"]
        .map((k) => make("tr", {}, make("td", {}, k === "openeo:job_id" ? "openEO job" : k), make("td", {}, String(p[k] ?? "–"))))),
    ];
    if (p.last_error) parts.push(make("p", {}, make("b", {}, "last error")), make("pre", {}, String(p.last_error)));
    parts.push(make("p", {}, make("b", {}, "history")), make("table", { className: "history" },
      history.history.map((h) => make("tr", {},
        make("td", {}, h.at), make("td", {}, `${h.from || ""} → ${h.to}`), make("td", {}, h.by || "")))));
    if (p.backend_name && p.id) {
      parts.push(make("p", { className: "muted" }, "back-end logs: ",
        make("code", {}, `tilekeeper campaign logs ${campaign} ${id}`)));
    }
    if (product.state === "ingested") {
      for (const pid of product.items || []) {
        const path = `collections/${encodeURIComponent(product.collection)}/items/${encodeURIComponent(pid)}`;
        try {
          const prod = await getJSON(path);
          const thumb = webUrl((prod.assets.thumbnail || {}).href);
          parts.push(make("p", {}, make("b", {}, "product"), ` ${pid} (version ${prod.properties.version || "1"})`));
          if (thumb) parts.push(make("img", { alt: `preview of ${pid}`, src: thumb }));
          parts.push(make("ul", {}, Object.entries(prod.assets).map(([k, a]) => make("li", {}, link(a.href, k)))));
          parts.push(link(`${api}browser/#/${path}`, "open in STAC Browser"));
        } catch (err) {
          parts.push(make("p", { className: "muted" }, err.message));
        }
      }
    } else if (product.state) {
      parts.push(make("p", { className: "muted" }, `product: ${product.state} ${product.error || ""}`));
    }
    el("tile").replaceChildren(...parts);
  }

  // For the bench and the tests: when the tiles were first drawn (ms since navigation).
  map.on("rendercomplete", () => {
    if (window.tilekeeperMap.firstPaintMs === null && (seen.size > 0 || cellTilesLoaded > 0)) {
      window.tilekeeperMap.firstPaintMs = performance.now();
    }
  });

  document.addEventListener("change", (event) => {
    if (event.target.id !== "mosaic") return;
    showMosaic = event.target.checked;
    mosaic.setVisible(showMosaic);
    restyle();
  });

  map.on("singleclick", (event) => {
    const features = map.getFeaturesAtPixel(event.pixel, { layerFilter: (l) => l === tiles || l === changedLayer });
    if (features.length) {
      showTile(current(features[0]).id);
    } else if (map.getView().getZoom() < vectorMinZoom) {
      // Tiles are pixels here: zoom in to where they can be picked.
      map.getView().animate({ center: event.coordinate, zoom: vectorMinZoom + 0.5 });
    }
  });

  window.tilekeeperMap = {
    map: map,
    seen: seen,
    polls: 0,
    firstPaintMs: null,
    lastUpdateMs: null,
    pollStarted: 0,
    colorOf: (id) => seen.get(id),
    get cellTilesLoaded() { return cellTilesLoaded; },
    get mosaicTilesLoaded() { return mosaicTilesLoaded; },
    get mosaicTileErrors() { return mosaicTileErrors; },
    get mosaicRefreshes() { return mosaicRefreshes; },
    get mosaicState() { return mosaicState; }, // none | loading | ready | error
    get mosaicUrl() { return mosaicUrl; },
    get mosaicLayer() { return mosaic.getLayers().getArray().at(-1) || null; }, // the newest
    refreshMosaic: mosaicChanged,
    vectorLayer: tiles,
    cellsLayer: cells,
    vectorMinZoom: vectorMinZoom,
    colors: COLORS,
    showTile: showTile,
  };

  (async function start() {
    renderLegend();
    loadMosaic();
    const [collection, summary] = await Promise.all([
      getJSON(`collections/${campaignPath}`),
      getJSON(`campaigns/${campaignPath}/summary`),
    ]);
    el("title").textContent = collection.title || campaign;
    renderSummary(summary);
    poll();
  })();
})();
