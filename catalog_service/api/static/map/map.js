// The campaign map: every tile from the service's vector tiles, coloured by status; a side
// panel with counts, throughput, ETA and cost; changes polled from a cursor and applied
// to the drawn tiles without reloading them; a click shows the tile's job, history and
// product. Everything comes from this service (OpenLayers and Natural Earth from npm).
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

  function styleFor(colour) {
    if (!styles[colour]) {
      styles[colour] = new ol.style.Style({
        fill: new ol.style.Fill({ color: colour }),
        stroke: new ol.style.Stroke({ color: "rgba(40,40,40,0.6)", width: 0.5 }),
      });
    }
    return styles[colour];
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

  // Zoomed out, where tiles are a few pixels wide, they come as raster overview tiles
  // (drawn by the service in status colours); zoomed in, as vector footprints.
  const vectorMinZoom = cfg.vectorMinZoom || 0;
  function overviewUrl() {
    const hidden = [...hiddenStatus].map((s) => `hide_status=${encodeURIComponent(s)}`)
      .concat([...hiddenBackend].map((b) => `hide_backend=${encodeURIComponent(b)}`));
    return `${api}campaigns/${campaignPath}/overview/{z}/{x}/{y}.png` + (hidden.length ? "?" + hidden.join("&") : "");
  }
  let overviewTilesLoaded = 0;
  const overviewSource = new ol.source.XYZ({ url: overviewUrl(), tileSize: 256, transition: 0 });
  overviewSource.on("tileloadend", () => { overviewTilesLoaded += 1; });
  const overview = new ol.layer.Tile({ source: overviewSource, maxZoom: vectorMinZoom });

  const tiles = new ol.layer.VectorTile({
    declutter: false,
    minZoom: vectorMinZoom,
    source: new ol.source.VectorTile({
      format: new ol.format.MVT({ idProperty: "id" }),
      url: `${api}campaigns/${campaignPath}/tiles/{z}/{x}/{y}.pbf`,
      maxZoom: 12,
    }),
    style: function (feature) {
      const t = current(feature);
      if (!seen.has(t.id)) seen.set(t.id, COLORS[t.status] || "white");
      if (overrides.has(t.id) || hiddenStatus.has(t.status) || hiddenBackend.has(t.backend)) {
        return null; // a changed tile is drawn by the layer of changes
      }
      return styleFor(COLORS[t.status] || "white");
    },
  });

  // Tiles whose status changed since the vector tiles were made: a small layer of their
  // own, so a change redraws a few features, not the whole campaign.
  const geojson = new ol.format.GeoJSON({ featureProjection: "EPSG:3857" });
  const changedSource = new ol.source.Vector();
  const changedLayer = new ol.layer.Vector({
    source: changedSource,
    style: function (feature) {
      const status = feature.get("status"), backend = feature.get("backend");
      if (hiddenStatus.has(status) || hiddenBackend.has(backend)) return null;
      return styleFor(COLORS[status] || "white");
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

  // Finished tiles' products, drawn from their ingest thumbnails (each over its item's
  // bbox, reprojected by OpenLayers) once a few hundred at most are in view.
  const previews = new ol.layer.Group({ layers: [], minZoom: vectorMinZoom + 1 });
  let showPreviews = true;
  let previewRequest = 0;
  async function loadPreviews() {
    const view = map.getView();
    if (!cfg.products || !showPreviews || view.getZoom() < vectorMinZoom + 1) {
      previews.getLayers().clear();
      return;
    }
    const request = ++previewRequest;
    const bbox = ol.proj.transformExtent(view.calculateExtent(map.getSize()), "EPSG:3857", "EPSG:4326");
    const response = await fetch(`${api}search`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/geo+json" },
      body: JSON.stringify({ collections: [cfg.products], bbox: bbox, limit: 300 }),
    });
    if (!response.ok || request !== previewRequest) return;
    const layers = [];
    for (const item of (await response.json()).features) {
      const thumb = webUrl((item.assets.thumbnail || {}).href);
      if (!thumb || item.properties.deprecated) continue;
      layers.push(new ol.layer.Image({
        source: new ol.source.ImageStatic({ url: thumb, imageExtent: item.bbox, projection: "EPSG:4326" }),
      }));
    }
    previews.getLayers().clear();
    previews.getLayers().extend(layers);
    window.tilekeeperMap.previews = layers.length;
  }

  const map = new ol.Map({
    target: "map",
    layers: [land, overview, tiles, changedLayer, previews],
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

  function renderSummary(summary) {
    const backends = Object.keys(summary.by_backend || {}).sort();
    const table = make("table", {},
      make("tr", {}, make("th", {}, "status"), make("th", { className: "n" }, "tiles"),
        backends.map((b) => make("th", { className: "n" }, b))));
    for (const [status, n] of Object.entries(summary.by_status || {})) {
      const box = make("input", { type: "checkbox", dataset: { status: status }, checked: !hiddenStatus.has(status) });
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
      make("input", { type: "checkbox", dataset: { backend: b }, checked: !hiddenBackend.has(b) }), b)));
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
    tiles.changed();
    changedLayer.changed();
    overviewSource.setUrl(overviewUrl());
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
    if (window.tilekeeperMap.firstPaintMs === null && (seen.size > 0 || overviewTilesLoaded > 0)) {
      window.tilekeeperMap.firstPaintMs = performance.now();
    }
  });

  map.on("moveend", loadPreviews);
  document.addEventListener("change", (event) => {
    if (event.target.id !== "previews") return;
    showPreviews = event.target.checked;
    loadPreviews();
  });

  map.on("singleclick", (event) => {
    const features = map.getFeaturesAtPixel(event.pixel, { layerFilter: (l) => l !== land });
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
    overviewTiles: () => overviewTilesLoaded,
    previews: 0,
    vectorLayer: tiles,
    vectorMinZoom: vectorMinZoom,
    colors: COLORS,
    showTile: showTile,
  };

  (async function start() {
    renderLegend();
    const [collection, summary] = await Promise.all([
      getJSON(`collections/${campaignPath}`),
      getJSON(`campaigns/${campaignPath}/summary`),
    ]);
    el("title").textContent = collection.title || campaign;
    renderSummary(summary);
    poll();
  })();
})();
