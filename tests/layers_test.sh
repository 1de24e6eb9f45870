#!/usr/bin/env bash
# The layers point one way: drivers <- actors <- engine (and the port, drivers/*.{hpp,cpp},
# below every backend). Inside actors/, the rooms do too: model <- records, handlers <-
# hotpath <- control (records and handlers do not use each other; hotpath never reaches
# control). Fails, naming the file and line, on any include or link that points up a layer
# or a room. Usage: layers_test.sh SOURCE_DIR
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
# Each room and the rooms it may use (itself included).
declare -A may_use=(
  [model]="model"
  [records]="model records"
  [handlers]="model handlers"
  [hotpath]="model records handlers hotpath"
  [control]="model records handlers hotpath control"
)
for room in "${!may_use[@]}"; do
  allowed=$(echo "${may_use[$room]}" | tr ' ' '|')
  hits=$(grep -rnE '#include "actors/[a-z_]+/' "actors/$room" --include='*.hpp' --include='*.cpp' \
         | grep -vE "#include \"actors/($allowed)/" || true)
  if [[ -n "$hits" ]]; then
    echo "actors/$room uses a room it may not (it may use: ${may_use[$room]}):"; echo "$hits"; bad=1
  fi
  # Its library links no room above it.
  above=$(for r in "${!may_use[@]}"; do [[ " ${may_use[$room]} " == *" $r "* ]] || echo "$r"; done | tr '\n' '|')
  above=${above%|}
  if [[ -n "$above" ]]; then
    lib=$(awk -v t="vmitap_$room" '$0 ~ "target_link_libraries\\(" t " " {p=1} p {print; if ($0 ~ /\)/) p=0}' \
          actors/CMakeLists.txt | grep -nE "vmitap_($above)\b" || true)
    if [[ -n "$lib" ]]; then
      echo "vmitap_$room links a room above it:"; echo "$lib"; bad=1
    fi
  fi
done
for dir in actors/*/; do
  room=$(basename "$dir")
  if [[ -z "${may_use[$room]:-}" ]]; then
    echo "actors/$room is not a known room: add it to layers_test.sh with the rooms it may use"; bad=1
  fi
done
if compgen -G "actors/*.[ch]pp" >/dev/null; then
  echo "files outside the rooms:"; ls actors/*.[ch]pp; bad=1
fi

links=$(grep -nE 'vmitap_(actors|engine)' drivers/CMakeLists.txt drivers/*/CMakeLists.txt drivers/*/*/CMakeLists.txt 2>/dev/null || true)
links+=$(grep -nE 'vmitap_engine' actors/CMakeLists.txt || true)
links+=$(grep -nE 'vmitap_(model|records|handlers|hotpath|control|actors)\b' drivers/CMakeLists.txt \
         drivers/*/CMakeLists.txt drivers/*/*/CMakeLists.txt 2>/dev/null || true)
if [[ -n "$links" ]]; then
  echo "a lower layer links a higher one:"; echo "$links"; bad=1
fi
if ((bad == 0)); then
  echo "layers: drivers <- actors (model <- records, handlers <- hotpath <- control) <- engine;" \
       "nothing points up"
fi
exit $bad
