#!/usr/bin/env bash
# Start a throwaway single-node Ceph cluster (1 mon + 1 bluestore OSD on a sparse file)
# plus the RADOS Gateway (S3) on 127.0.0.1.
#
#   start-rgw.sh DIR [RGW_PORT]      env: MON_PORT (default RGW_PORT+1), RGW_BLOCK_SIZE (sparse OSD file, 10 GiB),
#                                         RGW_ACCESS_KEY / RGW_SECRET_KEY (testkey/testsecret)
#
# If DIR already holds a cluster (a previous start followed by stop-rgw.sh), the daemons
# are restarted on the same ports and the data is kept. Prints "READY <endpoint>" once
# the gateway answers and the test user exists. Stop with stop-rgw.sh DIR (by pid files).
set -euo pipefail
DIR=${1:?usage: start-rgw.sh DIR [RGW_PORT]}
RGW_PORT=${2:-7480}
MON_PORT=${MON_PORT:-$((RGW_PORT + 1))}   # v2 messenger port
READY_TIMEOUT=${RGW_READY_TIMEOUT:-150}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
CONF="$DIR/ceph.conf"
export CEPH_CONF="$CONF"

fail() {
  echo "start-rgw: $*" >&2
  for f in "$DIR"/log/*.log; do [ -f "$f" ] && { echo "--- $f" >&2; tail -n 20 "$f" >&2; }; done
  exit 1
}

http_up() {
  if command -v curl >/dev/null 2>&1; then
    curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$RGW_PORT/"
  else
    python3 -c "import urllib.request,sys
try: urllib.request.urlopen('http://127.0.0.1:$RGW_PORT/', timeout=2)
except urllib.error.HTTPError: pass" 2>/dev/null
  fi
}

wait_http() {
  local deadline=$((SECONDS + READY_TIMEOUT))
  until http_up; do
    [ $SECONDS -lt $deadline ] || fail "radosgw did not answer on 127.0.0.1:$RGW_PORT within ${READY_TIMEOUT}s"
    sleep 0.1
  done
}

if [ -f "$CONF" ] && [ -d "$DIR/mon/ceph-a" ]; then
  # Restart an existing cluster: same conf, same ports, data kept.
  ceph-mon -i a || fail "ceph-mon restart failed"
  ceph-osd -i 0 || fail "ceph-osd restart failed"
  radosgw -n client.rgw.a || fail "radosgw restart failed"
  wait_http
  echo "READY http://127.0.0.1:$RGW_PORT"
  exit 0
fi

mkdir -p "$DIR"/{run,log,mon,osd/ceph-0,rgw}
FSID=$(python3 -c 'import uuid; print(uuid.uuid4())')
cat > "$CONF" <<CONFEOF
[global]
fsid = $FSID
mon_host = v2:127.0.0.1:$MON_PORT
public_addr = 127.0.0.1
ms_bind_ipv6 = false
ms_bind_msgr1 = false
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
auth_allow_insecure_global_id_reclaim = true
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
osd_crush_chooseleaf_type = 0
mon_allow_pool_size_one = true
mon_warn_on_pool_no_redundancy = false
mon_max_pg_per_osd = 1000
run_dir = $DIR/run
admin_socket = $DIR/run/\$name.asok
pid_file = $DIR/run/\$name.pid
log_file = $DIR/log/\$name.log
keyring = /dev/null
[mon]
mon_data = $DIR/mon/\$cluster-\$id
mon_allow_pool_delete = true
[osd]
osd_data = $DIR/osd/\$cluster-\$id
osd_objectstore = bluestore
# must live outside osd_data ("Too many levels of symbolic links" otherwise)
bluestore_block_path = $DIR/osd/\$cluster-\$id.block
bluestore_block_create = true
bluestore_block_size = ${RGW_BLOCK_SIZE:-10737418240}
bluestore_fsck_on_mount = false
osd_memory_target = 939524096
osd_op_num_shards = 2
osd_op_num_threads_per_shard = 1
[client.rgw.a]
# radosgw defaults to ms_mon_client_mode=secure, impossible with auth=none -> EACCES (-13) forever
ms_mon_client_mode = crc
ms_client_mode = crc
rgw_frontends = beast endpoint=127.0.0.1:$RGW_PORT
rgw_data = $DIR/rgw
rgw_thread_pool_size = 32
CONFEOF

monmaptool --create --fsid "$FSID" --addv a "[v2:127.0.0.1:$MON_PORT]" "$DIR/monmap" >/dev/null
ceph-mon --mkfs -i a --monmap "$DIR/monmap" || fail "ceph-mon --mkfs failed"
ceph-mon -i a || fail "ceph-mon failed to start (is port $MON_PORT free?)"
OSD_UUID=$(python3 -c 'import uuid; print(uuid.uuid4())')
OSD_ID=$(timeout 60 ceph --connect-timeout 30 osd new "$OSD_UUID") || fail "ceph osd new failed"
ceph-osd -i "$OSD_ID" --mkfs --osd-uuid "$OSD_UUID" 2>>"$DIR/log/mkfs.log" || fail "ceph-osd --mkfs failed"
ceph-osd -i "$OSD_ID" || fail "ceph-osd failed to start"
radosgw -n client.rgw.a || fail "radosgw failed to start"
wait_http
timeout 60 radosgw-admin user create --uid=test --display-name=test \
  --access-key="${RGW_ACCESS_KEY:-testkey}" --secret-key="${RGW_SECRET_KEY:-testsecret}" >/dev/null \
  || fail "radosgw-admin user create failed"
echo "READY http://127.0.0.1:$RGW_PORT"
