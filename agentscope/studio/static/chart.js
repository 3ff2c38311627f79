// A tiny line chart in inline SVG (no library, no network).
//   lineChart(points, {title})                      one series: [[x, y], ...] in x order
//   lineChart([{name, points}, ...], {title, ...})  several series on one pair of axes, with a legend
// Options: width, height (viewBox units; the SVG scales to its box), xFormat (x value -> tick text).
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

  function asSeries(data, title) {
    if (data.length && !Array.isArray(data[0])) return data;
    return [{ name: title, points: data }];
  }

  function lineChart(data, options) {
    const o = Object.assign({ width: 420, height: 180, title: "" }, options || {});
    const xFormat = o.xFormat || ((x) => `step ${fmt(x)}`);
    const series = asSeries(data, o.title);
    const multi = series.length > 1;
    const pad = { l: 54, r: 12, t: multi ? 38 : 22, b: 26 };
    const svg = el("svg", { viewBox: `0 0 ${o.width} ${o.height}`, class: "chart", role: "img" });
    svg.appendChild(el("title", {}, o.title));
    svg.appendChild(el("text", { x: pad.l, y: 14, class: "chart-title" }, o.title));
    const w = o.width - pad.l - pad.r;
    const h = o.height - pad.t - pad.b;
    const drawn = series.filter((s) => s.points.length);
    if (!drawn.length) {
      svg.appendChild(el("text", { x: pad.l + w / 2, y: pad.t + h / 2, "text-anchor": "middle", class: "chart-empty" }, "no points yet"));
      return svg;
    }
    let xmin = Infinity, xmax = -Infinity, ymin = Infinity, ymax = -Infinity;
    for (const s of drawn) {
      for (const [x, y] of s.points) {
        if (x < xmin) xmin = x; if (x > xmax) xmax = x;
        if (y < ymin) ymin = y; if (y > ymax) ymax = y;
      }
    }
    if (xmax === xmin) xmax = xmin + 1;
    if (ymax === ymin) { const d = Math.abs(ymax) / 2 || 1; ymax += d; ymin -= d; }
    const X = (x) => pad.l + ((x - xmin) / (xmax - xmin)) * w;
    const Y = (y) => pad.t + h - ((y - ymin) / (ymax - ymin)) * h;
    for (let i = 0; i <= 4; i++) {
      const v = ymin + ((ymax - ymin) * i) / 4;
      svg.appendChild(el("line", { x1: pad.l, x2: pad.l + w, y1: Y(v), y2: Y(v), class: "grid" }));
      svg.appendChild(el("text", { x: pad.l - 6, y: Y(v) + 4, "text-anchor": "end", class: "tick" }, fmt(v)));
    }
    svg.appendChild(el("text", { x: pad.l, y: o.height - 6, class: "tick" }, xFormat(xmin)));
    svg.appendChild(el("text", { x: pad.l + w, y: o.height - 6, "text-anchor": "end", class: "tick" }, xFormat(xmax)));
    let legendX = pad.l;
    series.forEach((s, i) => {
      const last = s.points.length ? s.points[s.points.length - 1] : null;
      if (last) {
        const d = s.points.map(([x, y], j) => `${j ? "L" : "M"}${X(x).toFixed(1)},${Y(y).toFixed(1)}`).join("");
        svg.appendChild(el("path", { d, class: `line s${i}`, "data-series": s.name }));
        svg.appendChild(el("circle", { cx: X(last[0]), cy: Y(last[1]), r: 3, class: `dot s${i}` }));
      }
      if (multi) {
        const text = `${s.name} ${last ? fmt(last[1]) : "—"}`;
        svg.appendChild(el("rect", { x: legendX, y: 22, width: 10, height: 3, class: `swatch s${i}` }));
        svg.appendChild(el("text", { x: legendX + 14, y: 27, class: `legend s${i}` }, text));
        legendX += 22 + text.length * 5.6;
      }
    });
    if (!multi) {
      const points = drawn[0].points;
      svg.appendChild(el("text", { x: pad.l + w, y: 14, "text-anchor": "end", class: "chart-last" }, `last ${fmt(points[points.length - 1][1])}`));
    }
    return svg;
  }

  window.lineChart = lineChart;
})();
