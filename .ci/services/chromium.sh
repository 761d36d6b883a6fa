# Debian's chromium for the console's browser tests (core/api/console, driven by chromedp). With CI set those
# tests fail when /usr/bin/chromium is missing, so it is installed here. Sourced by .ci/run under
# `set -euo pipefail`.
if [ ! -x /usr/bin/chromium ]; then
  echo "installing chromium for the console's browser tests"
  apt-get install -y -qq chromium >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null && apt-get install -y -qq chromium >/dev/null; }
fi
/usr/bin/chromium --version || true
