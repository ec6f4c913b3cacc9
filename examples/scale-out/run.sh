#!/bin/sh
# Three atelierd daemons (d1, d2, d3 on 127.0.0.1:50061-50063) behind nginx on 127.0.0.1:50060, in the foreground;
# Ctrl-C stops all. Then, from another terminal:
#   build/atelier --server 127.0.0.1:50060 txt2img -p "a red circle" -o out     # any daemon
#   build/atelier --server 127.0.0.1:50060 watch d2-<hex>                       # routed to d2 by the job id
#   build/atelier --server 127.0.0.1:50061,127.0.0.1:50062,127.0.0.1:50063 txt2img -p "a blue square"   # gRPC's
#                                                                               # own round_robin, no proxy
# PROXY=haproxy uses examples/scale-out/haproxy.cfg instead.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
prefix=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$prefix"' EXIT INT TERM
for i in 1 2 3; do
  "$root/build/atelierd" --listen "127.0.0.1:5006$i" --instance-name "d$i" --models-dir "${MODELS_DIR:-models}" \
    --metrics-listen "127.0.0.1:946$i" > /dev/null 2> "$prefix/d$i.log" &
done
render() {
  sed -e "s|\${PROXY_PORT}|50060|g" -e "s|\${D1_PORT}|50061|g" -e "s|\${D2_PORT}|50062|g" -e "s|\${D3_PORT}|50063|g" \
      -e "s|\${PREFIX}|$prefix|g" "$1" > "$2"
}
if [ "${PROXY:-nginx}" = haproxy ]; then
  render "$here/haproxy.cfg" "$prefix/haproxy.cfg"
  haproxy -db -f "$prefix/haproxy.cfg"
else
  render "$here/nginx.conf" "$prefix/nginx.conf"
  nginx -p "$prefix" -c "$prefix/nginx.conf"
fi
