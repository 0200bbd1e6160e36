# bench/dhcp-pg.sh: DHCP CPU per exchange at one fixed rate, in one run: rackboot on SQLite,
# rackboot on PostgreSQL with one server and with three servers on one pool, Kea on
# memfile and Kea on PostgreSQL (issue 15, item 8 and "What it must show").
#
# Not run by itself: `bench/run --only dhcp-pg [--quick] [--no-build]` sources it and uses
# bench/run's namespaces, perfdhcp probe (perfdhcp_probe), CPU-accounting cgroup and
# server helpers. Environment knobs:
#   DHCP_PG_RATE=N      the rate for every row (default bench/run's DHCP_SAME_RATE, 5000/s)
#   DHCP_PG_ROWS=LIST   a comma list of rows to run (default all: sqlite,pg1,pg1b,pg3,kea,keapg,keapgmt)
#   DHCP_PG_STEP_DOWN=0 a row that fails at the rate is not retried at lower rates
#   DHCP_PG_BUILD=TEXT  what the rackboot binary is, for the section (e.g. the commit)
#
# Rows (each run starts its servers from nothing: a fresh state directory, database or
# lease file):
#   sqlite  rackboot, SQLite, perfdhcp as a relay (giaddr) on bench/run's veth pair
#   pg1     rackboot, PostgreSQL, one server, relay, same veth pair
#   pg1b    rackboot, PostgreSQL, one server, perfdhcp broadcasting on a bridge
#   pg3     rackboot, PostgreSQL, three servers on one pool, each in its own namespace
#           on one bridge with perfdhcp's, perfdhcp broadcasting (a relay would send to
#           one server)
#   kea     kea-dhcp4, memfile (persist, lfc-interval 0), relay
#   keapg   kea-dhcp4, lease-database postgresql (schema by `kea-admin db-init pgsql`), relay
#   keapgmt the same with Kea's multi-threading on (8 threads; Kea 2.2 defaults to one)
# PostgreSQL is one cluster for every row (scripts/test-postgres: fsync on,
# synchronous_commit on, so a lease is on disk before its ACK), reached over its unix
# socket from the namespaces, with pg_stat_statements loaded to count the statements each
# exchange costs; its processes are in their own CPU-accounting cgroup, so its CPU per
# exchange is a column of its own. Everything is torn down on exit (dhcp_pg_cleanup,
# called from bench/run's cleanup).

DHCP_PG_BEGIN='<!-- bench/dhcp-pg.sh: begin -->'
DHCP_PG_END='<!-- bench/dhcp-pg.sh: end -->'
DHCP_PG_RATE="${DHCP_PG_RATE:-$DHCP_SAME_RATE}"
DHCP_PG_ROWS="${DHCP_PG_ROWS:-sqlite,pg1,pg1b,pg3,kea,keapg,keapgmt}"
DHCP_PG_STEP_DOWN="${DHCP_PG_STEP_DOWN:-1}"
DHCP_PG_MAX_TRIES=5          # the rate, then 4/5 of it (or less) each time while the row fails
DHCP_PG_BUILD="${DHCP_PG_BUILD:-release build}"   # what the rackboot binary was built from, for the section
# The bridge: namespace BR holds br0; servers B1-B3 and perfdhcp's namespace BC hang on it.
BR_NET=10.79
BR_POOL_START=$BR_NET.4.0
BR_POOL_END=$BR_NET.255.254
BR_CLI_IP=$BR_NET.0.9
DHCP_PG_NS=()                # namespaces this file made (deleted on exit)
DHCP_PG_PIDS=()              # servers running in the bridge namespaces
PG_DIR="" PG_PORT="" PG_CGROUP="" PG_BIN=""

dhcp_pg_ns() { echo "rbb-$1-$ID"; }   # dhcp_pg_ns br|b1|b2|b3|bc

dhcp_pg_cleanup() {
    local pid ns
    for pid in "${DHCP_PG_PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    for pid in "${DHCP_PG_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    DHCP_PG_PIDS=()
    for ns in "${DHCP_PG_NS[@]}"; do kill_ns_pids "$ns"; ip netns del "$ns" 2>/dev/null || true; done
    DHCP_PG_NS=()
    if [ -n "$PG_DIR" ]; then "$REPO/scripts/test-postgres" stop "$PG_DIR" >/dev/null 2>&1 || true; PG_DIR=""; fi
    if [ -n "$PG_CGROUP" ]; then
        for _ in 1 2 3 4 5; do rmdir "$PG_CGROUP" 2>/dev/null && break; sleep 0.2; done
        PG_CGROUP=""
    fi
}

# ---------------------------------------------------------------- PostgreSQL
# psql_q DB SQL: one query over the cluster's unix socket, unaligned, tuples only.
psql_q() { PGOPTIONS="-c client_min_messages=warning" psql -h "$PG_DIR" -p "$PG_PORT" -U postgres -d "$1" -AtqX -c "$2"; }

# pg_start: a durable cluster (scripts/test-postgres without --no-fsync) with
# pg_stat_statements, its processes in their own CPU-accounting cgroup.
pg_start() {
    local exports pm p
    exports=$("$REPO/scripts/test-postgres" start --port 55432) || die "scripts/test-postgres start failed"
    PG_DIR=$(sed -n 's/^export RACKBOOT_TEST_PG_DIR=//p' <<<"$exports")
    PG_PORT=$(sed -n 's/^export RACKBOOT_TEST_PG_URL=.*:\([0-9]*\)\/.*/\1/p' <<<"$exports")
    PG_BIN=$(dirname "$(sed -n 1p "$PG_DIR/data/postmaster.opts" | cut -d' ' -f1)")
    psql_q postgres "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'"
    # pg_ctl restart keeps the options of the first start (postmaster.opts).
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/postgres.log" -w -t 60 restart \
        >/dev/null || die "PostgreSQL did not restart with pg_stat_statements"
    psql_q postgres "CREATE EXTENSION pg_stat_statements"
    # Statements run inside triggers and functions too (the change feed's NOTIFY triggers).
    psql_q postgres "ALTER SYSTEM SET pg_stat_statements.track = 'all'" >/dev/null
    psql_q postgres "SELECT pg_reload_conf()" >/dev/null
    psql_q postgres 'SHOW server_version' >"$WORK/pg.version"
    log "  PostgreSQL $(cat "$WORK/pg.version") on $PG_DIR port $PG_PORT: fsync $(psql_q postgres 'SHOW fsync'), synchronous_commit $(psql_q postgres 'SHOW synchronous_commit')"
    PG_CGROUP="/sys/fs/cgroup/cpuacct/rbbpg-$$"
    [ -d /sys/fs/cgroup/cpuacct ] || PG_CGROUP="/sys/fs/cgroup/rbbpg-$$"
    mkdir -p "$PG_CGROUP" || die "cannot make a cgroup for PostgreSQL's CPU"
    pm=$(head -1 "$PG_DIR/data/postmaster.pid")
    # The postmaster and the processes it already forked; later backends inherit it.
    for p in "$pm" $(ps -o pid= --ppid "$pm"); do echo "$p" >"$PG_CGROUP/cgroup.procs"; done
}

# cg_usage_ns CGROUP: CPU nanoseconds used by everything in CGROUP (v1 cpuacct or v2).
cg_usage_ns() {
    if [ -f "$1/cpuacct.usage" ]; then cat "$1/cpuacct.usage"
    else awk '$1 == "usage_usec" { printf "%d", $2 * 1000 }' "$1/cpu.stat"; fi
}

pg_new_db() { # pg_new_db NAME: an empty database
    psql_q postgres "DROP DATABASE IF EXISTS $1" >/dev/null
    psql_q postgres "CREATE DATABASE $1"
}
pg_url() { echo "postgres://postgres@localhost/$1?host=$PG_DIR&port=$PG_PORT"; }

# ---------------------------------------------------------------- the bridge
bridge_up() {
    local br b i ns
    br=$(dhcp_pg_ns br)
    for ns in br b1 b2 b3 bc; do ip netns add "$(dhcp_pg_ns $ns)"; DHCP_PG_NS+=("$(dhcp_pg_ns $ns)"); done
    ip -n "$br" link add br0 type bridge
    ip -n "$br" link set br0 up
    for i in 1 2 3 c; do
        ns=$(dhcp_pg_ns "b$i")
        ip -n "$br" link add "p$i" type veth peer name e0 netns "$ns"
        ip -n "$br" link set "p$i" master br0 up
        if [ "$i" = c ]; then b=$BR_CLI_IP; else b=$BR_NET.0.$i; fi
        ip -n "$ns" addr add "$b/16" dev e0
        ip -n "$ns" link set e0 up
        ip -n "$ns" link set lo up
    done
    ip netns exec "$(dhcp_pg_ns bc)" ping -q -c 1 -W 3 "$BR_NET.0.3" >/dev/null || die "the bridge does not pass traffic"
}

# wait_udp_ns NS PID NAME: until something in NS listens on UDP 67 (30 s).
wait_udp_ns() {
    local i
    for i in $(seq 300); do
        if ip netns exec "$1" ss -Hluan "sport = :67" | grep -q .; then return 0; fi
        if ! kill -0 "$2" 2>/dev/null; then log "$3 exited at startup:"; tail -5 "$WORK/$3.log" >&2; return 1; fi
        sleep 0.1
    done
    log "$3 is not listening on UDP 67 after 30 s"; return 1
}

# cluster_write NAME: a config file that names the server in the cluster.
cluster_config() {
    printf '[cluster]\nname = "%s"\n' "$1" >"$WORK/$1.toml"
    echo "$WORK/$1.toml"
}

# start_bridge_servers COUNT DB: COUNT rackboot servers (b1..bCOUNT) on database DB, one
# pool, each in its own namespace on the bridge.
start_bridge_servers() {
    local n="$1" db="$2" i ns ip pid
    for i in $(seq "$n"); do
        ns=$(dhcp_pg_ns "b$i"); ip=$BR_NET.0.$i
        rm -rf "$WORK/b$i"; mkdir -p "$WORK/b$i/state" "$WORK/b$i/tftp"
        ip netns exec "$ns" "$RACKBOOT_BIN" serve -c "$(cluster_config "b$i")" --interface e0 \
            --dhcp-range "$BR_POOL_START-$BR_POOL_END" --state-dir "$WORK/b$i/state" \
            --store "$(pg_url "$db")" --api-listen "$ip:8080" --tftp-listen "$ip:69" \
            --tftp-root "$WORK/b$i/tftp" >"$WORK/b$i.log" 2>&1 &
        pid=$!
        PIDS+=("$pid"); DHCP_PG_PIDS+=("$pid")
        echo "$pid" >"$CPU_CGROUP/cgroup.procs"
    done
    SERVER_PID=${DHCP_PG_PIDS[0]}
    for i in $(seq "$n"); do
        wait_udp_ns "$(dhcp_pg_ns "b$i")" "${DHCP_PG_PIDS[$((i - 1))]}" "b$i" || return 1
    done
    [ "$n" -gt 1 ] || return 0
    # Every server sees all the others as live members before the load starts (servers
    # that split the clients between them by hash need the full membership).
    local t0 seen all
    t0=$(date +%s)
    while [ $(($(date +%s) - t0)) -lt 30 ]; do
        seen=(); all=1
        for i in $(seq "$n"); do
            seen+=("$(cluster_members "$i")")
            [ "${seen[-1]:-0}" -ge "$n" ] || all=0
        done
        [ "$all" = 1 ] && break
        sleep 0.5
    done
    log "  $n servers up; live members each sees: ${seen[*]}"
}

# cluster_members I: live members in server bI's GET /api/v1/cluster.
cluster_members() {
    local ip=$BR_NET.0.$1 token
    token=$(cat "$WORK/b$1/state/admin-token" 2>/dev/null) || return 0
    ip netns exec "$(dhcp_pg_ns "b$1")" curl -fsS -m 5 -H "Authorization: Bearer $token" \
        "http://$ip:8080/api/v1/cluster" 2>/dev/null \
        | python3 -c 'import json, sys
d = json.load(sys.stdin)
m = d.get("members", d) if isinstance(d, dict) else d
print(sum(1 for x in m if not isinstance(x, dict) or x.get("alive", x.get("live", True))))' 2>/dev/null || true
}

stop_bridge_servers() {
    local pid ns
    for pid in "${DHCP_PG_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${DHCP_PG_PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    DHCP_PG_PIDS=()
    for ns in b1 b2 b3; do kill_ns_pids "$(dhcp_pg_ns $ns)"; done
    SERVER_PID=""
}

# metric_sum NS IP METRIC: the sum of a metric's samples on one rackboot's /metrics.
metric_sum() {
    ip netns exec "$1" curl -fsS -m 5 "http://$2:8080/metrics" 2>/dev/null \
        | awk -v m="$3" 'index($0, m) == 1 { s += $NF } END { printf "%.0f", s }'
}

# ---------------------------------------------------------------- one row
# The servers of a row: where they run, how to start and stop them.
row_label() {
    case "$1" in
        sqlite) echo "rackboot, SQLite, 1 server, relay" ;;
        pg1) echo "rackboot, PostgreSQL, 1 server, relay" ;;
        pg1b) echo "rackboot, PostgreSQL, 1 server, broadcast" ;;
        pg3) echo "rackboot, PostgreSQL, 3 servers, broadcast" ;;
        kea) echo "Kea, memfile, relay" ;;
        keapg) echo "Kea, PostgreSQL, relay" ;;
        keapgmt) echo "Kea, PostgreSQL, multi-threaded (8 threads), relay" ;;
    esac
}
row_uses_pg() { [[ "$1" == pg* || "$1" == keapg* ]]; }
row_is_rackboot() { [[ "$1" == sqlite || "$1" == pg* ]]; }

# row_start ROW DB: start ROW's servers (DB: its fresh database); sets where perfdhcp runs.
row_start() {
    local row="$1" db="$2"
    DHCP_CLI_NS="$CLI"; DHCP_CLI_IF="$VC"; DHCP_TARGET="$SRV_IP"
    case "$row" in
        sqlite)
            rm -rf "$WORK/rackboot-dhcp"; mkdir -p "$WORK/rackboot-dhcp/state" "$WORK/rackboot-dhcp/tftp"
            start_rackboot "$WORK/rackboot-dhcp/state" "$WORK/rackboot-dhcp/tftp"
            wait_udp 67 rackboot ;;
        pg1)
            rm -rf "$WORK/rackboot-dhcp"; mkdir -p "$WORK/rackboot-dhcp/state" "$WORK/rackboot-dhcp/tftp"
            start_rackboot "$WORK/rackboot-dhcp/state" "$WORK/rackboot-dhcp/tftp" \
                -c "$(cluster_config pg1)" --store "$(pg_url "$db")"
            wait_udp 67 rackboot ;;
        pg1b|pg3)
            DHCP_CLI_NS=$(dhcp_pg_ns bc); DHCP_CLI_IF=e0; DHCP_TARGET=""
            start_bridge_servers "$([ "$row" = pg3 ] && echo 3 || echo 1)" "$db" ;;
        kea)
            KEA_LEASE_DB=""
            start_kea ;;
        keapg|keapgmt)
            kea-admin db-init pgsql -u postgres -n "$db" -h "$PG_DIR" -P "$PG_PORT" >"$WORK/kea-admin.log" 2>&1 \
                || { log "kea-admin db-init pgsql failed:"; tail -5 "$WORK/kea-admin.log" >&2; return 1; }
            KEA_LEASE_DB="{ \"type\": \"postgresql\", \"name\": \"$db\", \"user\": \"postgres\", \"host\": \"$PG_DIR\", \"port\": $PG_PORT }"
            # Kea 2.2 is single-threaded unless told (later versions default to threads):
            # with PostgreSQL each lease waits for its own commit, so keapgmt gives it 8.
            [ "$row" = keapgmt ] && KEA_EXTRA="\"multi-threading\": { \"enable-multi-threading\": true, \"thread-pool-size\": 8, \"packet-queue-size\": 64 }"
            start_kea ;;
    esac
}
row_stop() {
    case "$1" in
        pg1b|pg3) stop_bridge_servers ;;
        *) stop_server ;;
    esac
    KEA_LEASE_DB=""; KEA_EXTRA=""
}

# row_rackboot_metrics ROW: "ACKS_PER_SERVER LEASE_WRITES BATCHES CLAIMS_LOST PEER_OWNED"
# summed over the row's rackboot servers (ACKs per server as a/b/c; PEER_OWNED: packets a
# server left to the peer that owns the client, where servers split clients).
row_rackboot_metrics() {
    local row="$1" acks=() writes=0 batches=0 lost=0 peer=0 i ns ip n=1
    [ "$row" = pg3 ] && n=3
    for i in $(seq "$n"); do
        if [ "$row" = sqlite ] || [ "$row" = pg1 ]; then ns=$SRV; ip=$SRV_IP
        else ns=$(dhcp_pg_ns "b$i"); ip=$BR_NET.0.$i; fi
        acks+=("$(metric_sum "$ns" "$ip" 'rackboot_dhcp_replied_total{type="ack"')")
        writes=$((writes + $(metric_sum "$ns" "$ip" rackboot_dhcp_lease_writes_total)))
        batches=$((batches + $(metric_sum "$ns" "$ip" rackboot_dhcp_lease_batch_size_count)))
        lost=$((lost + $(metric_sum "$ns" "$ip" rackboot_dhcp_claims_lost_total)))
        peer=$((peer + $(metric_sum "$ns" "$ip" rackboot_dhcp_peer_owned_total)))
    done
    echo "$(IFS=/; echo "${acks[*]}") $writes $batches $lost $peer"
}

# row_run ROW ROUND: one measured run of ROW at DHCP_PG_RATE (stepping down while it
# fails, when allowed), from fresh servers each time; appends the result to
# $WORK/dhcppg-ROW.runs:
# "ROUND RATE ACHIEVED DROP% SERVER_US PG_US PERFDHCP_US STATEMENTS_PER_EX PASS ACKS WRITES BATCHES LOST PEER OVERFLOWS"
row_run() {
    local row="$1" round="$2" rate="$DHCP_PG_RATE" try db p0 p1 pg_us stmts pass metrics x retried=0
    for try in $(seq "$DHCP_PG_MAX_TRIES"); do
        db="dhcppg_${row}_r${round}_t${try}"
        row_uses_pg "$row" && pg_new_db "$db"
        if ! row_start "$row" "$db"; then
            log "  $row: did not start"; row_stop "$row"
            echo "$round $rate 0 100 n/a n/a n/a n/a start-failed - - - - - -" >>"$WORK/dhcppg-$row.runs"
            return 0
        fi
        sleep 1   # past the start-up writes
        if row_uses_pg "$row"; then psql_q postgres "SELECT pg_stat_statements_reset()" >/dev/null; fi
        p0=$(cg_usage_ns "$PG_CGROUP")
        read -r ACH DROP SCPU PCPU OVF LOST < <(perfdhcp_probe "$rate" "$DHCP_SAME_SECS" "$WORK/perfdhcp-pg-$row-$round-$rate.log")
        p1=$(cg_usage_ns "$PG_CGROUP")
        pg_us=n/a; stmts=n/a
        if row_uses_pg "$row"; then
            pg_us=$(awk -v a="$p0" -v b="$p1" -v r="$ACH" -v s="$DHCP_SAME_SECS" 'BEGIN { if (r == 0) print "n/a"; else printf "%.0f", (b - a) / 1000 / (r * s) }')
            # Long statements shown by their start and end (where the WHERE clause is).
            psql_q postgres "SELECT s.calls, round(s.total_exec_time::numeric, 1), s.toplevel,
                                    CASE WHEN length(q) > 170 THEN left(q, 80) || ' … ' || right(q, 80) ELSE q END
                             FROM (SELECT *, regexp_replace(query, '\s+', ' ', 'g') AS q FROM pg_stat_statements) s
                             JOIN pg_database d ON d.oid = s.dbid
                             WHERE d.datname = '$db' ORDER BY s.calls DESC" >"$WORK/dhcppg-$row-$round.stmts"
            # Top-level statements only (a trigger's statements run inside the one that fired it).
            stmts=$(psql_q postgres "SELECT coalesce(sum(s.calls), 0) FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
                                     WHERE d.datname = '$db' AND s.toplevel" \
                | awk -v r="$ACH" -v s="$DHCP_SAME_SECS" '{ if (r == 0) print "n/a"; else printf "%.3f", $1 / (r * s) }')
            echo "$ACH $DHCP_SAME_SECS" >"$WORK/dhcppg-$row-$round.exchanges"
        fi
        metrics="- - - - -"
        # What perfdhcp's own socket buffer dropped (UDP RcvbufErrors in its namespace).
        OVF_RUN=$OVF
        row_is_rackboot "$row" && metrics=$(row_rackboot_metrics "$row")
        pass=no
        dhcp_pass "$rate" "$ACH" "$DROP" && pass=yes
        log "  $row round $round: -r $rate for ${DHCP_SAME_SECS}s -> $ACH exchanges/s, $DROP% dropped ($pass; perfdhcp buffer overflows $OVF_RUN); CPU per exchange: server $(us_per "$SCPU" "$ACH" "$DHCP_SAME_SECS") us, PostgreSQL $pg_us us, perfdhcp $(us_per "$PCPU" "$ACH" "$DHCP_SAME_SECS") us; statements per exchange $stmts; rackboot ACKs, lease writes, batches, claims lost, left to peer: $metrics"
        echo "$round $rate $ACH $DROP $(us_per "$SCPU" "$ACH" "$DHCP_SAME_SECS") $pg_us $(us_per "$PCPU" "$ACH" "$DHCP_SAME_SECS") $stmts $pass $metrics $OVF_RUN" \
            >>"$WORK/dhcppg-$row.runs"
        row_stop "$row"
        if row_uses_pg "$row"; then psql_q postgres "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null || true; fi
        [ "$pass" = yes ] && return 0
        [ "$DHCP_PG_STEP_DOWN" = 1 ] || return 0
        # A collapse below half of a stepped-down rate is run once more before it counts
        # (a burst of other work on a shared machine; bench/run retries likewise).
        if [ "$rate" != "$DHCP_PG_RATE" ] && [ "$retried" = 0 ] && [ "$((ACH * 2))" -lt "$rate" ]; then
            retried=1; continue
        fi
        # 4/5 of the rate, or below what the row achieved when that is lower (Kea on
        # PostgreSQL single-threaded manages a few hundred per second, one commit each).
        x=$(awk -v r="$rate" -v a="$ACH" 'BEGIN { x = r * 4 / 5; if (a * 0.95 < x) x = a * 0.95; printf "%d", int(x / 10) * 10 }')
        [ "$x" -ge 50 ] || return 0
        rate=$x
    done
}

# ---------------------------------------------------------------- all rows
bench_dhcp_pg() {
    if [[ ",$DHCP_PG_ROWS," =~ ,(sqlite|pg1|pg1b|pg3), ]] && [ "$RACKBOOT_OK" != 1 ]; then
        die "dhcp-pg: rackboot is not built ($RACKBOOT_STATUS)"
    fi
    [ -n "$CPU_CGROUP" ] || die "dhcp-pg: needs a CPU-accounting cgroup (three servers' CPU is summed there)"
    need_pkg psql postgresql-client
    need_pkg kea-admin kea-admin
    need_pkg curl curl
    [ -x "$REPO/scripts/test-postgres" ] || die "no scripts/test-postgres"
    log "DHCP on PostgreSQL: rows $DHCP_PG_ROWS at $DHCP_PG_RATE/s for ${DHCP_SAME_SECS}s, $DHCP_ROUNDS rounds"
    export RACKBOOT_SECRET_KEY
    RACKBOOT_SECRET_KEY=$(head -c 32 /dev/urandom | base64)   # one key for all servers of a cluster
    pg_start
    bridge_up
    local round row
    IFS=, read -r -a DHCP_PG_ROW_LIST <<<"$DHCP_PG_ROWS"
    for round in $(seq "$DHCP_ROUNDS"); do
        for row in "${DHCP_PG_ROW_LIST[@]}"; do row_run "$row" "$round"; done
    done
    dhcp_pg_section >"$WORK/dhcp-pg.md"
    dhcp_pg_cleanup
}

# ---------------------------------------------------------------- the section
# The run of each round that the row ends on (the first passing rate, or the last tried).
row_final_runs() { awk '{ last[$1] = $0 } END { for (r in last) print last[r] }' "$WORK/dhcppg-$1.runs" | sort -n -k1,1; }
# col_median ROW FIELD: median of a field over the row's final runs ("n/a" when none is a number)
col_median() {
    local vals
    vals=$(row_final_runs "$1" | awk -v f="$2" '$f ~ /^[0-9.]+$/ { print $f }')
    [ -n "$vals" ] || { echo n/a; return; }
    # shellcheck disable=SC2086
    median $vals
}
col_each() { row_final_runs "$1" | awk -v f="$2" '{ printf "%s%s", (NR > 1 ? ", " : ""), $f }'; }

# statements_table ROW: the statements of the row's last PostgreSQL run, per exchange.
statements_table() {
    local f ex secs
    f=$(ls "$WORK"/dhcppg-"$1"-*.stmts 2>/dev/null | sort | tail -1)
    [ -n "$f" ] && [ -s "$f" ] || return 0
    read -r ex secs <"${f%.stmts}.exchanges"
    echo
    echo "| calls per 1,000 exchanges | µs of execution per exchange | statement |"
    echo "|---|---|---|"
    awk -F'|' -v n="$((ex * secs))" 'n > 0 && $1 * 1000 / n >= 0.5 && ++shown <= 10 {
            q = $0; sub(/^[^|]*\|[^|]*\|[^|]*\|/, "", q); gsub(/\|/, "\\|", q); gsub(/`/, "", q)
            printf "| %.1f | %.1f | %s`%s` |\n", $1 * 1000 / n, $2 * 1000 / n, ($3 == "t" ? "" : "(in a trigger) "), q }' "$f"
}

dhcp_pg_section() {
    local row label pg_rev
    echo "$DHCP_PG_BEGIN"
    echo "## DHCP CPU per exchange on SQLite and PostgreSQL, 1 and 3 servers, against Kea ($(date -u '+%Y-%m-%d %H:%M') UTC)"
    echo
    echo "Written by \`bench/run --only dhcp-pg\` (bench/dhcp-pg.sh; command: \`$CMDLINE\`, with DHCP_PG_ROWS=$DHCP_PG_ROWS, DHCP_PG_RATE=$DHCP_PG_RATE);"
    echo "$("$RACKBOOT_BIN" --version 2>/dev/null | head -1) ($DHCP_PG_BUILD), Kea $(kea-dhcp4 -V 2>/dev/null | head -1), perfdhcp $(perfdhcp -v 2>&1 | head -1 | awk '{ print $NF }'),"
    echo "PostgreSQL $(cat "$WORK/pg.version"). $DHCP_ROUNDS rounds, the rows alternating within each round;"
    echo "$(nproc) vCPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)) shared by the servers, PostgreSQL and perfdhcp; $(load_summary dhcp-pg)."
    echo
    echo "| servers | rate asked | exchanges/s (median) | dropped (median) | server CPU per exchange (median; each round) | PostgreSQL CPU per exchange (median; each round) | server + PostgreSQL | perfdhcp CPU per exchange | statements per exchange |"
    echo "|---|---|---|---|---|---|---|---|---|"
    for row in "${DHCP_PG_ROW_LIST[@]}"; do
        [ -s "$WORK/dhcppg-$row.runs" ] || continue
        local srv pg both
        srv=$(col_median "$row" 5); pg=$(col_median "$row" 6)
        both=$(awk -v a="$srv" -v b="$pg" 'BEGIN { if (a !~ /^[0-9.]+$/) print "n/a"; else if (b !~ /^[0-9.]+$/) print a " µs"; else printf "%.0f µs", a + b }')
        printf '| %s | %s | %s | %s%% | %s µs (%s) | %s | %s | %s µs | %s |\n' \
            "$(row_label "$row")" "$(col_each "$row" 2)" "$(col_median "$row" 3)" "$(col_median "$row" 4)" \
            "$srv" "$(col_each "$row" 5)" \
            "$(if row_uses_pg "$row"; then echo "$pg µs ($(col_each "$row" 6))"; else echo "-"; fi)" \
            "$both" "$(col_median "$row" 7)" "$(col_median "$row" 8)"
    done
    echo
    echo "A rate passes with < ${DHCP_MAX_DROP_PCT}% of exchanges lost and ≥ ${DHCP_MIN_ACHIEVED_PCT}% of the asked rate achieved. Runs that did not pass"
    echo "(a row then steps down to 4/5 of the rate, from fresh servers, up to $DHCP_PG_MAX_TRIES tries), every run as"
    echo "round: asked rate -> exchanges/s, dropped, server / PostgreSQL / perfdhcp CPU per exchange (replies perfdhcp's"
    echo "own socket buffer dropped, when any: then perfdhcp, not the server, lost those):"
    echo
    for row in "${DHCP_PG_ROW_LIST[@]}"; do
        [ -s "$WORK/dhcppg-$row.runs" ] || continue
        awk -v l="$(row_label "$row")" '{ printf "%s%s %s: %s -> %s/s, %s%%, %s / %s / %s µs%s%s", (NR == 1 ? "- " l ": " : "; "), "round", $1, $2, $3, $4, $5, $6, $7, ($15 ~ /^[1-9]/ ? " (perfdhcp overflows " $15 ")" : ""), ($9 == "yes" ? "" : " (failed)") } END { print "" }' "$WORK/dhcppg-$row.runs"
    done
    echo
    echo "rackboot's own counters (/metrics of each server, summed; per completed exchange), each round:"
    echo
    for row in sqlite pg1 pg1b pg3; do
        [ -s "$WORK/dhcppg-$row.runs" ] || continue
        row_final_runs "$row" | awk -v l="$(row_label "$row")" -v s="$DHCP_SAME_SECS" '
            { ex = $3 * s; if (ex == 0 || $11 !~ /^[0-9]+$/) next
              printf "%s round %s: lease writes %.2f, group commits %.3f per exchange; claims lost %d, packets left to the owning peer %d, ACKs by server %s", (n++ ? ";" : "- " l ":"), $1, $11 / ex, $12 / ex, $13, $14, $10 }
            END { if (n) print "" }'
    done
    for row in pg1 pg3 keapg keapgmt; do
        [ -s "$WORK/dhcppg-$row.runs" ] || continue
        echo
        echo "Statements sent to PostgreSQL by $(row_label "$row"), its last run (pg_stat_statements, tracking statements in triggers too, per completed exchange; BEGIN and COMMIT included, the 10 most frequent of at least 0.5 per 1,000 exchanges; execution time is wall time in the backend, a commit's WAL flush not included):"
        statements_table "$row"
    done
    echo
    echo "Method: bench/run's same-rate DHCP measurement (perfdhcp \`-r RATE -p $DHCP_SAME_SECS -W 200000 -R $DHCP_CLIENTS -s 7\`, full"
    echo "DISCOVER-OFFER-REQUEST-ACK exchanges; the exchanges counted are ACKs received), servers started afresh for every run"
    echo "(new state directory, database or lease file; rackboot's default \`[dhcp]\` settings: 10 ms group commit, no ICMP probe)."
    echo "Relay rows: the server alone in the server namespace of a veth pair, perfdhcp in the other acting as a relay"
    echo "(giaddr), as in the DHCP section above. Broadcast rows: the servers each in their own namespace, on one bridge"
    echo "with perfdhcp's namespace, perfdhcp broadcasting from 0.0.0.0 as clients do (a relay would send to one server);"
    echo "the one-server broadcast row separates what three servers cost from what broadcast costs. Server CPU is the"
    echo "user + system time of every server process of the row (a CPU-accounting cgroup; for three servers the sum of the"
    echo "three) over the run, divided by the exchanges completed; PostgreSQL CPU the same for all of PostgreSQL's"
    echo "processes (postmaster, backends, WAL writer, checkpointer, autovacuum: its own cgroup), whose work is part of the"
    echo "cost of a durable lease. One PostgreSQL 15 cluster serves every row (scripts/test-postgres: fsync on,"
    echo "synchronous_commit on, so a lease is on disk before its ACK; reached over its unix socket), a fresh database per"
    echo "run; Kea's schema from \`kea-admin db-init pgsql\`, \`lease-database: { type: postgresql }\`."
    echo "Everything ran at nice -10; the fuzzing run (bench/fuzz.sh at nice 19) and other helpers' builds shared the machine."
    echo
    echo "The item-8 comparison on an Intel host (56 vs 59 µs there) cannot be measured here: this host is AMD."
    echo "$DHCP_PG_END"
}

# dhcp_pg_splice SECTION DOC: the section replaces the previous one in DOC (or is appended).
dhcp_pg_splice() {
    if [ -f "$2" ] && grep -qF "$DHCP_PG_BEGIN" "$2" && grep -qF "$DHCP_PG_END" "$2"; then
        awk -v b="$DHCP_PG_BEGIN" -v e="$DHCP_PG_END" -v sec="$1" '
            $0 == b { while ((getline line < sec) > 0) print line; skip = 1; next }
            $0 == e { skip = 0; next }
            !skip' "$2" >"$2.tmp"
        mv "$2.tmp" "$2"
    else
        { echo; cat "$1"; } >>"$2"
    fi
}
