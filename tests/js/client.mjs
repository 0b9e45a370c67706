// A scriptable official socket.io-client, driven by the Python tests over stdin/stdout.
// Each stdin line is a JSON command; each stdout line is a JSON report:
//   {"op":"connect","url":...,"token":...,"cursors":{...},"transports":[...],"msgpack":bool}
//     -> {"kind":"connected","id":...} or {"kind":"connect_error","message":...,"data":...}
//   {"op":"emit","ref":N,"event":"task:create","payload":{...}} -> {"kind":"ack","ref":N,"ack":{...}}
//   {"op":"close"} -> exits
// Every server event is reported as {"kind":"event","event":name,"data":payload}.
import { io } from "socket.io-client";
import msgpackParser from "socket.io-msgpack-parser";
import readline from "node:readline";

let socket = null;
const report = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

const rl = readline.createInterface({ input: process.stdin });
rl.on("line", (line) => {
  const cmd = JSON.parse(line);
  if (cmd.op === "connect") {
    const options = {
      auth: { token: cmd.token, ...(cmd.cursors ? { cursors: cmd.cursors } : {}) },
      transports: cmd.transports || ["websocket"],
      reconnection: false,
      forceNew: true,
    };
    if (cmd.msgpack) options.parser = msgpackParser;
    socket = io(cmd.url, options);
    socket.on("connect", () => report({ kind: "connected", id: socket.id }));
    socket.on("connect_error", (err) => report({ kind: "connect_error", message: err.message, data: err.data ?? null }));
    socket.on("disconnect", (reason) => report({ kind: "disconnect", reason }));
    socket.onAny((event, data) => report({ kind: "event", event, data }));
  } else if (cmd.op === "emit") {
    socket.timeout(10000).emit(cmd.event, cmd.payload, (err, ack) => {
      report({ kind: "ack", ref: cmd.ref, ack: err ? { timeout: true } : ack });
    });
  } else if (cmd.op === "close") {
    if (socket) socket.close();
    rl.close();
    setTimeout(() => process.exit(0), 10);
  }
});
