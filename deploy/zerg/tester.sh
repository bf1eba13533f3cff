#!/bin/sh
# Zerg as tester: pause the main instance, let a zerg with new code take the traffic, resume.
#   deploy/zerg/tester.sh MASTER_PID NEW_CODE_DIR
set -eu
master=$1
kill -TSTP "$master"                         # main workers stop accepting (stats: "pause")
zergserve --chdir "$2" --module demo:application --zerg /tmp/zergserve-demo.zerg &
zerg=$!
echo "zerg $zerg serving with the code in $2; press enter to give the traffic back"
read -r _
kill -TERM "$zerg"                           # the zerg finishes what it has and leaves
kill -TSTP "$master"                         # main workers accept again
