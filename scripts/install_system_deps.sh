#!/usr/bin/env bash
# Debian packages the fleet and its tests need: redis-server, ffmpeg, the GStreamer RTSP server.
# Installs only what is missing; needs root (or sudo).
set -euo pipefail
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v ffmpeg >/dev/null || need+=(ffmpeg)
command -v openssl >/dev/null || need+=(openssl)  # the TLS test makes a certificate
command -v ip >/dev/null || need+=(iproute2)  # the partition test runs hosts in network namespaces
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)  # the MQTT sink tests start a broker
[ -x /usr/bin/chromium ] || need+=(chromium)  # the live view's browser tests (driven by Playwright)
command -v docker-compose >/dev/null || need+=(docker-compose)  # validates docker-compose.yml without a Docker engine
if ! /usr/bin/python3 -c 'import gi; gi.require_version("GstRtspServer", "1.0"); from gi.repository import GstRtspServer' 2>/dev/null; then
  need+=(python3-gi gir1.2-gst-rtsp-server-1.0)
fi
command -v gst-inspect-1.0 >/dev/null || need+=(gstreamer1.0-tools)
for plugin in x264enc:gstreamer1.0-plugins-ugly jpegdec:gstreamer1.0-plugins-good \
              videotestsrc:gstreamer1.0-plugins-base rtph264pay:gstreamer1.0-plugins-good; do
  if ! gst-inspect-1.0 "${plugin%%:*}" >/dev/null 2>&1; then need+=("${plugin#*:}"); fi
done
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing Debian packages: ${need[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" gstreamer1.0-rtsp >/dev/null
