// A tiny line chart in inline SVG (no library, no network): lineChart(points, {title, width, height}).
"use strict";

(function () {
  const NS = "http://www.w3.org/2000/svg";

  function el(tag, attrs, text) {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function fmt(v) {
    if (!isFinite(v)) return String(v);
    const a = Math.abs(v);
    if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(2);
    return String(Math.round(v * 1000) / 1000);
  }

  // points: [[step, value], ...] in step order.
  function lineChart(points, options) {
    const o = Object.assign({ width: 420, height: 180, title: "" }, options || {});
    const pad = { l: 54, r: 12, t: 22, b: 26 };
    const svg = el("svg", { viewBox: `0 0 ${o.width} ${o.height}`, class: "chart", role: "img" });
    svg.appendChild(el("title", {}, o.title));
    svg.appendChild(el("text", { x: pad.l, y: 14, class: "chart-title" }, o.title));
    const w = o.width - pad.l - pad.r;
    const h = o.height - pad.t - pad.b;
    if (!points.length) {
      svg.appendChild(el("text", { x: pad.l + w / 2, y: pad.t + h / 2, "text-anchor": "middle", class: "chart-empty" }, "no points yet"));
      return svg;
    }
    let xmin = points[0][0], xmax = points[points.length - 1][0];
    let ymin = Infinity, ymax = -Infinity;
    for (const [, y] of points) { if (y < ymin) ymin = y; if (y > ymax) ymax = y; }
    if (xmax === xmin) xmax = xmin + 1;
    if (ymax === ymin) { ymax += 1; ymin -= 1; }
    const X = (x) => pad.l + ((x - xmin) / (xmax - xmin)) * w;
    const Y = (y) => pad.t + h - ((y - ymin) / (ymax - ymin)) * h;
    for (let i = 0; i <= 4; i++) {
      const v = ymin + ((ymax - ymin) * i) / 4;
      svg.appendChild(el("line", { x1: pad.l, x2: pad.l + w, y1: Y(v), y2: Y(v), class: "grid" }));
      svg.appendChild(el("text", { x: pad.l - 6, y: Y(v) + 4, "text-anchor": "end", class: "tick" }, fmt(v)));
    }
    svg.appendChild(el("text", { x: pad.l, y: o.height - 6, class: "tick" }, `step ${fmt(xmin)}`));
    svg.appendChild(el("text", { x: pad.l + w, y: o.height - 6, "text-anchor": "end", class: "tick" }, `step ${fmt(xmax)}`));
    const d = points.map(([x, y], i) => `${i ? "L" : "M"}${X(x).toFixed(1)},${Y(y).toFixed(1)}`).join("");
    svg.appendChild(el("path", { d, class: "line" }));
    const [lx, ly] = points[points.length - 1];
    svg.appendChild(el("circle", { cx: X(lx), cy: Y(ly), r: 3, class: "dot" }));
    svg.appendChild(el("text", { x: pad.l + w, y: 14, "text-anchor": "end", class: "chart-last" }, `last ${fmt(ly)}`));
    return svg;
  }

  window.lineChart = lineChart;
})();
