#!/bin/sh
# Zerg as tester: pause the main instance, let a zerg with new code take the traffic, resume.
#   deploy/zerg/tester.sh MASTER_PID NEW_CODE_DIR [ZERG_SERVER]
# The main instance is resumed before the zerg is stopped: someone always accepts, and a zerg that
# died meanwhile (so that stopping it fails) cannot leave the main instance paused.
set -eu
master=$1
server=${3:-/tmp/zergserve-demo.zerg}
kill -TSTP "$master"                         # main workers stop accepting (stats: "pause")
zergserve --chdir "$2" --module demo:application --zerg "$server" &
zerg=$!
echo "zerg $zerg serving with the code in $2; press enter to give the traffic back"
read -r _
kill -TSTP "$master"                         # main workers accept again
kill -TERM "$zerg" || true                   # the zerg finishes what it has and leaves
wait "$zerg" || true
