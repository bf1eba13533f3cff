#!/bin/bash
# nginx as an emperor's vassal: vassal.sh NGINX_DIR SOCKETS_DIR LOGS_DIR (apps-available/nginx.ini).
# nginx does not speak the emperor protocol, so this shell speaks it for nginx, which runs in the
# foreground ("daemon off;") as its child: it tells the emperor 1, 5, 17 (up, accepting, loyal:
# so a later crash is not throttled as a vassal that never served), turns byte 1 into a graceful
# reload (HUP, config rendered again) and 0, 2 or EOF (the emperor is gone) into a graceful stop
# (QUIT). nginx gets SIGQUIT when this shell dies (setpriv --pdeathsig): when the emperor kills it
# after --emperor-curse-tolerance, or dies itself, nginx workers are not left behind serving.
nginx_dir=$1 sockets=$2 logs=$3
fd=${UWSGI_EMPEROR_FD:?vassal.sh runs as a vassal of a zergserve or uWSGI emperor}
conf=$sockets/nginx.conf

render() {
    sed -e "s|@NGINX@|$nginx_dir|g" -e "s|@SOCKETS@|$sockets|g" -e "s|@LOGS@|$logs|g" \
        -e "s|@USER@|$(id -un) $(id -gn)|g" "$nginx_dir/nginx.conf.in" > "$conf"
}

render || exit 1
setpriv --pdeathsig QUIT nginx -c "$conf" -g "daemon off;" &
nginx=$!
printf '\001\005\021' >&"$fd"
trap 'kill -QUIT "$nginx"' TERM INT QUIT
(
    while :; do
        byte=$(dd bs=1 count=1 status=none <&"$fd" | od -An -tu1 | tr -d ' \n')
        echo "received message ${byte:-EOF} from emperor" >&2
        case $byte in
            1) render && kill -HUP "$nginx" ;;
            *) kill -QUIT "$nginx"; exit 0 ;;
        esac
    done
) &
reader=$!
while kill -0 "$nginx" 2>/dev/null; do
    wait "$nginx"
    status=$?
done
kill "$reader" 2>/dev/null
exit "${status:-1}"
