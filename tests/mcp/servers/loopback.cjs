// Preloaded into a Node MCP server (node --require loopback.cjs ...) by the interop tests: every TCP server it
// starts listens on 127.0.0.1 only (not on all interfaces), and the address it got is announced on stderr as
// "LOOPBACK LISTENING 127.0.0.1:PORT", so the test can start it on port 0 and learn the port.
"use strict";
const net = require("net");
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  const first = args[0];
  if (first !== null && typeof first === "object") {
    args[0] = { ...first, host: "127.0.0.1" };
  } else if (typeof first === "number" || (typeof first === "string" && /^\d+$/.test(first))) {
    if (typeof args[1] === "string") args[1] = "127.0.0.1";
    else args.splice(1, 0, "127.0.0.1");
  }
  this.once("listening", () => {
    const address = this.address();
    if (address && typeof address === "object") {
      process.stderr.write(`LOOPBACK LISTENING ${address.address}:${address.port}\n`);
    }
  });
  return listen.apply(this, args);
};
