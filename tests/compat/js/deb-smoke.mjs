// A client of an installed node, for scripts/test-deb-nspawn.sh: connects with a token,
// subscribes to a channel, publishes to it through the server HTTP API and waits for the
// publication, then stays connected until the server closes the WebSocket. One line on stdout
// per step ("subscribed", "publication", "closed <code> <reason>"), so the caller can follow
// along; anything unexpected is a line on stderr and exit status 1.
//
//   node deb-smoke.mjs <ws url> <api url> <api key> <token> <channel>
//
// Raw client protocol v2 (JSON) over `ws`, not the SDK: the SDK hides the close code (3001 is
// a reconnect code to it), which is what the caller checks.
import WebSocket from 'ws';

const [url, api, apiKey, token, channel] = process.argv.slice(2);
if (!channel) {
  console.error('usage: node deb-smoke.mjs <ws url> <api url> <api key> <token> <channel>');
  process.exit(2);
}
const fail = (msg) => {
  console.error(`deb-smoke: ${msg}`);
  process.exit(1);
};
const nonce = `deb-smoke-${process.pid}-${Date.now()}`;
const ws = new WebSocket(url);
const send = (cmd) => ws.send(JSON.stringify(cmd));
let published = false;

ws.on('open', () => send({ id: 1, connect: { token, name: 'deb-smoke' } }));
ws.on('error', (e) => fail(`websocket: ${e.message}`));
ws.on('close', (code, reason) => {
  console.log(`closed ${code} ${reason}`);
  process.exit(published ? 0 : 1);
});
ws.on('message', (data) => {
  for (const line of data.toString().split('\n')) {
    if (line.trim() === '') continue;
    const msg = JSON.parse(line);
    if (Object.keys(msg).length === 0) {
      send({}); // the server's ping: pong
    } else if (msg.error) {
      fail(`reply ${msg.id}: error ${JSON.stringify(msg.error)}`);
    } else if (msg.id === 1) {
      send({ id: 2, subscribe: { channel } });
    } else if (msg.id === 2) {
      console.log('subscribed');
      publish();
    } else if (msg.push?.pub && msg.push.channel === channel && msg.push.pub.data?.nonce === nonce) {
      published = true;
      console.log('publication');
    }
  }
});

async function publish() {
  const res = await fetch(`${api}/publish`, {
    method: 'POST',
    headers: { 'X-API-Key': apiKey },
    body: JSON.stringify({ channel, data: { nonce } }),
  }).catch((e) => fail(`publish: ${e.message}`));
  const body = await res.text();
  if (res.status !== 200 || !JSON.parse(body).result) fail(`publish: HTTP ${res.status} ${body}`);
}
