# Sourced by scripts/serve and scripts/test: install the dashboard's one third-party file,
# the official Socket.IO browser client, into web/node_modules (from web/package-lock.json).
# `web_client required` fails without npm; `web_client optional` warns and goes on (the
# server then serves the page without live updates, and the page says so).
web_client() {
  if [ -f web/node_modules/socket.io-client/dist/socket.io.esm.min.js ] &&
     [ ! web/package-lock.json -nt web/node_modules ]; then
    return 0
  fi
  if ! command -v npm >/dev/null; then
    if [ "$1" = required ]; then
      echo "npm is required for the dashboard's Socket.IO client (web/package.json)" >&2
      return 1
    fi
    echo "note: npm not found: the dashboard at / runs without live updates" \
         "(install Node.js and npm, then run this again)" >&2
    return 0
  fi
  echo "installing the dashboard's Socket.IO client (npm ci in web/) ..." >&2
  if ! (cd web && npm ci --no-audit --no-fund --loglevel=error); then
    [ "$1" = required ] && return 1
    echo "warning: npm ci in web/ failed: the dashboard runs without live updates" >&2
  fi
}
