#!/usr/bin/env bash
# The layers point one way: drivers <- actors <- engine (and the port, drivers/*.{hpp,cpp},
# below every backend). Fails, naming the file and line, on any include or link that points
# up a layer. Usage: layers_test.sh SOURCE_DIR
set -euo pipefail
cd "${1:-.}"
bad=0
check() {  # check DIR PATTERN WHAT
  local hits
  hits=$(grep -rnE "$2" $1 --include='*.hpp' --include='*.cpp' --include='*.in' 2>/dev/null || true)
  if [[ -n "$hits" ]]; then
    echo "$3:"; echo "$hits"; bad=1
  fi
}
check "drivers" '#include "(actors|engine)/' "drivers/ includes a higher layer"
check "actors" '#include "engine/' "actors/ includes engine/"
# The port knows no backend; a backend knows no other backend.
check "drivers/*.hpp drivers/*.cpp" '#include "drivers/(sim|xen)/' "the port includes a backend"
check "drivers/sim" '#include "drivers/xen/' "drivers/sim includes drivers/xen"
if [[ -d drivers/xen ]]; then
  check "drivers/xen" '#include "drivers/sim/' "drivers/xen includes drivers/sim (only its tests' fake may)"
fi
links=$(grep -nE 'vmitap_(actors|engine)' drivers/CMakeLists.txt drivers/*/CMakeLists.txt drivers/*/*/CMakeLists.txt 2>/dev/null || true)
links+=$(grep -nE 'vmitap_engine' actors/CMakeLists.txt || true)
if [[ -n "$links" ]]; then
  echo "a lower layer links a higher one:"; echo "$links"; bad=1
fi
if ((bad == 0)); then
  echo "layers: drivers <- actors <- engine, nothing points up"
fi
exit $bad
