// Xsolla's order-tracking code for centrifuge-js ("Set up order tracking" guide, and
// docs/centrifuge-protocol.md §14), run unmodified against order-status: `data` with
// the player's JWT, the client-level `publication` handler, `history` on `subscribed`.
//
//   node track.js ws://127.0.0.1:8081/connection/websocket [deadline-ms]
//
// Environment: AUTH_JWT (the player's token, sent as data.auth), USER_EXTERNAL_ID
// (default u1), PROJECT_ID (default 42), TRACK_DEADLINE_MS (default 5 min, as the guide).
// Prints one line per event, for tests and people alike:
//   subscribed <channel> | history <order_id> <status> | live <order_id> <status>
//   history-error <code> <message> | error <json> | disconnected <code> <reason>
// and exits 0 after `disconnected` (the deadline calls disconnect(): code 0).
'use strict';

let Centrifuge, WebSocket;
try {
  ({ Centrifuge } = require('centrifuge'));
  WebSocket = require('ws');
} catch (e) {
  console.error(`track.js: ${e.message}\nInstall the pinned clients first: deploy/test.sh ` +
    '(or: npm ci --prefix tests/clients/node)');
  process.exit(2);
}

const url = process.argv[2];
if (!url) {
  console.error('usage: node track.js ws://HOST:PORT/connection/websocket [deadline-ms]');
  process.exit(2);
}
const deadline = Number(process.argv[3] || process.env.TRACK_DEADLINE_MS || 5 * 60 * 1000);

// ---- From here on: the guide's code, with its constants read from the environment. ----
const client = new Centrifuge(url, {
  websocket: WebSocket,
  data: {
    user_external_id: process.env.USER_EXTERNAL_ID || 'u1',
    auth: process.env.AUTH_JWT,
    project_id: Number(process.env.PROJECT_ID || 42),
  },
});
const seen = (s, src) => console.log(src, s.order_id, s.status);
client.on('publication', (ctx) => seen(ctx.data, 'live'));
client.on('disconnected', (ctx) => { console.log('disconnected', ctx.code, ctx.reason); process.exit(0); });
client.on('error', (ctx) => console.log('error', JSON.stringify(ctx)));
client.connect();
client.on('subscribed', function (ctx) {
  console.log('subscribed', ctx.channel);
  client.history(ctx.channel, { limit: -1, since: { offset: 0 }, reverse: false }).then(
    (resp) => resp.publications.forEach((p) => seen(p.data, 'history')),
    (err) => console.log('history-error', err.code, err.message));
});
setTimeout(() => client.disconnect(), deadline);
