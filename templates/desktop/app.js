// A small graphical app: it serves one page on 127.0.0.1 and opens it in the user's browser
// (xdg-open); the page's Quit button, Ctrl-C or --exit-after SECONDS stop it.
// Run: ./hello-desktop.run [--no-open] [--exit-after SECONDS]
const http = require('http');
const fs = require('fs');
const path = require('path');
const { spawn } = require('child_process');

const args = process.argv.slice(2);
const exitAfter = args.includes('--exit-after') ? Number(args[args.indexOf('--exit-after') + 1]) : null;
const icon = fs.readFileSync(path.join(__dirname, 'icon.svg'));
const page = `<!doctype html><meta charset="utf-8"><title>Hello Desktop</title>
<style>body{font:16px system-ui,sans-serif;display:grid;place-items:center;height:90vh;background:#f4f6fb}main{text-align:center}</style>
<main><img src="/icon.svg" width="96" height="96" alt=""><h1>Hello from a bundle</h1>
<p>Node ${process.version}, served from <code>${process.env.APPDIR || __dirname}</code></p>
<form method="post" action="/quit"><button>Quit</button></form></main>`;

const stop = () => {
  server.close();
  server.closeAllConnections(); // a browser keeps its connection open
};
const server = http.createServer((req, res) => {
  if (req.url === '/icon.svg') return res.writeHead(200, { 'content-type': 'image/svg+xml' }).end(icon);
  if (req.url === '/quit' && req.method === 'POST') {
    res.writeHead(200, { 'content-type': 'text/html' }).end('<p>Bye.</p>', stop);
    return;
  }
  res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(page);
});

server.listen(0, '127.0.0.1', () => {
  const url = `http://127.0.0.1:${server.address().port}/`;
  console.log(`Hello Desktop is at ${url}`);
  const graphical = process.env.DISPLAY || process.env.WAYLAND_DISPLAY;
  if (!args.includes('--no-open') && graphical) {
    const opener = spawn('xdg-open', [url], { stdio: 'ignore', detached: true });
    opener.on('error', () => console.log('(no xdg-open here: open the address yourself)'));
    opener.unref();
  }
  if (exitAfter !== null) setTimeout(stop, exitAfter * 1000);
});
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
