#!/usr/bin/env bash
# Load run: 3 servers (+ beast_default variant) x 2 bodies, wrk -t1 -c16, 2 s warm-up + 10 s measured,
# whole rotation repeated 3x (library order rotated each time), server CPU
# time per request from /proc/<pid>/stat. Writes results/ and prints tables.
set -uo pipefail
HC_DIR=$(cd "$(dirname "$0")" && pwd); export HC_DIR
cd "$HC_DIR"
ROTATIONS=${ROTATIONS:-3}; DUR=${DUR:-10}; WARM=${WARM:-2}; CONNS=${CONNS:-16}
LOAD_MAX=${LOAD_MAX:-1.5}; IDLE_MAX=${IDLE_MAX:-30}; WAIT_PER_ROT=${WAIT_PER_ROT:-300}; WAIT_BUDGET=${WAIT_BUDGET:-420}
# beast_default = same beast binary with Beast's default read buffer (no reserve),
# an extra row to show the effect of that one setting.
LIBS=(civetweb beast evhttp beast_default); BODIES=(small bin4k)
declare -A PORT=([civetweb]=18091 [beast]=18092 [evhttp]=18093 [beast_default]=18094)
declare -A CMD=([civetweb]="bin/civetweb_server %p" [beast]="bin/beast_server %p"
                [evhttp]="bin/evhttp_server %p" [beast_default]="bin/beast_server %p 0 0")
CLK_TCK=$(getconf CLK_TCK)
OUT=results; mkdir -p "$OUT"; RAW=$OUT/raw.tsv; ROT=$OUT/rotations.tsv

for l in civetweb beast evhttp; do [ -x bin/${l}_server ] || ./build.sh; done
command -v wrk >/dev/null || { echo "wrk missing (apt-get install -y wrk)"; exit 1; }
for l in "${LIBS[@]}"; do
  if ss -ltn | grep -q ":${PORT[$l]} "; then echo "port ${PORT[$l]} busy"; exit 1; fi
done

cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }            # utime+stime, all threads
sys_busy()  { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; } # busy jiffies, all CPUs
load1()     { cut -d' ' -f1 /proc/loadavg; }
gt()        { awk -v a="$1" -v b="$2" 'BEGIN{exit !(a>b)}'; }

printf 'rotation\tlib\tbody\tthreads\trequests\tduration_s\treq_s\tp50_us\tp99_us\tserver_cpu_us_per_req\twrk_cpu_us_per_req\tother_cpu_pct\terr_status\terr_connect\terr_read\terr_write\terr_timeout\tserver_alive\n' > "$RAW"
printf 'rotation\tstart_utc\tload1_at_start\tloadavg\twaited_s\tidle_sample_busy_pct\torder\n' > "$ROT"

WAIT_USED=0; T0=$(date +%s)
for ((r = 1; r <= ROTATIONS; r++)); do
  # Rotate library order each rotation (A B C D, B C D A, C D A B).
  order=(); for ((i = 0; i < ${#LIBS[@]}; i++)); do order+=("${LIBS[$(((i + r - 1) % ${#LIBS[@]}))]}"); done
  # Load gate: wait in 30 s steps (<= WAIT_PER_ROT per rotation, WAIT_BUDGET in
  # total) while the 1-min load > LOAD_MAX, or while a 3 s idle sample (none of
  # our processes running) shows the machine > IDLE_MAX % of one core busy.
  waited=0
  while :; do
    b0=$(sys_busy); sleep 3; b1=$(sys_busy)
    idle_busy=$(awk -v d=$((b1 - b0)) -v hz="$CLK_TCK" 'BEGIN{printf "%.1f", 100*d/(3*hz)}')
    la=$(load1); lavg=$(cut -d' ' -f1-3 /proc/loadavg)
    if ! gt "$la" "$LOAD_MAX" && ! gt "$idle_busy" "$IDLE_MAX"; then break; fi
    if (( waited >= WAIT_PER_ROT || WAIT_USED >= WAIT_BUDGET )); then
      echo "rotation $r: wait limit reached, running anyway (load1=$la busy=$idle_busy%)" >&2; break
    fi
    echo "rotation $r: load1=$la idle-sample busy=${idle_busy}%, sleeping 30 s" >&2
    sleep 30; waited=$((waited + 30)); WAIT_USED=$((WAIT_USED + 30))
  done
  printf '%d\t%s\t%s\t%s\t%d\t%s\t%s\n' "$r" "$(date -u +%H:%M:%S)" "$la" "$lavg" "$waited" "$idle_busy" "${order[*]}" >> "$ROT"
  echo "== rotation $r  load1=$la ($lavg) waited=${waited}s idle-sample busy=${idle_busy}% order: ${order[*]}" >&2

  for lib in "${order[@]}"; do
    port=${PORT[$lib]}; url="http://127.0.0.1:$port/v2/models/m/infer"
    # shellcheck disable=SC2086
    ${CMD[$lib]//%p/$port} 2>>"$OUT/server_${lib}.log" & spid=$!
    for _ in $(seq 50); do
      [ "$(curl -s -o /dev/null -w '%{http_code}' -X POST -d x "$url")" = 200 ] && break; sleep 0.1
    done
    threads=$(awk '/^Threads:/{print $2}' "/proc/$spid/status")
    for body in "${BODIES[@]}"; do
      wrk -t1 -c"$CONNS" -d"${WARM}s" --timeout 5s -s "$body.lua" "$url" > "$OUT/warm_r${r}_${lib}_${body}.txt" 2>&1
      c0=$(cpu_ticks "$spid"); s0=$(sys_busy)
      /usr/bin/time -f '%U %S' -o "$OUT/.wrktime" \
        wrk -t1 -c"$CONNS" -d"${DUR}s" --timeout 5s -s "$body.lua" "$url" > "$OUT/wrk_r${r}_${lib}_${body}.txt" 2>&1
      c1=$(cpu_ticks "$spid"); s1=$(sys_busy)
      alive=yes; kill -0 "$spid" 2>/dev/null || alive=no
      read -r wu ws < "$OUT/.wrktime"
      line=$(grep '^RESULT' "$OUT/wrk_r${r}_${lib}_${body}.txt")
      awk -v r="$r" -v lib="$lib" -v body="$body" -v th="$threads" -v line="$line" \
          -v sc=$((c1 - c0)) -v sb=$((s1 - s0)) -v wu="$wu" -v ws="$ws" -v hz="$CLK_TCK" -v alive="$alive" '
        BEGIN {
          n = split(line, kv, " "); for (i = 2; i <= n; i++) { split(kv[i], p, "="); v[p[1]] = p[2] }
          req = v["requests"]; dur = v["duration_us"] / 1e6
          wrk_ticks = (wu + ws) * hz
          other = (sb - sc - wrk_ticks) / (dur * hz) * 100; if (other < 0) other = 0
          printf "%d\t%s\t%s\t%d\t%d\t%.2f\t%.0f\t%d\t%d\t%.2f\t%.2f\t%.1f\t%d\t%d\t%d\t%d\t%d\t%s\n",
            r, lib, body, th, req, dur, req / dur, v["p50_us"], v["p99_us"],
            sc * 1e6 / hz / req, (wu + ws) * 1e6 / req, other,
            v["err_status"], v["err_connect"], v["err_read"], v["err_write"], v["err_timeout"], alive
        }' >> "$RAW"
      tail -1 "$RAW" >&2
    done
    kill -TERM "$spid"; wait "$spid" 2>/dev/null
  done
done
rm -f "$OUT/.wrktime"
echo "total wall time: $(( $(date +%s) - T0 )) s, load-wait used: ${WAIT_USED} s" | tee "$OUT/elapsed.txt" >&2
python3 summarize.py "$RAW" "$ROT" | tee "$OUT/summary.md"
