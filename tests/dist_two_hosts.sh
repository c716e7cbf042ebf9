#!/usr/bin/env bash
# Two "machines" on one host: network namespaces joined by a veth pair, with MPI between them
# over TCP only (--mca btl tcp,self), so the path between machines is exercised, not shared
# memory. mpirun runs in the first namespace and starts the second rank's daemon in the other
# through an rsh agent that enters that namespace (where ssh would reach another machine).
# Usage: dist_two_hosts.sh TEST_DIST NNOPS_TRAIN. Exits 77 (skipped) where namespaces cannot be made.
set -uo pipefail
test_dist=$1 train=$2
id=$$ a=nnops-a$$ b=nnops-b$$ net=10.$((id % 200 + 20)).$((id / 200 % 250)).
work=$(mktemp -d)
cleanup() { ip netns del "$a" 2>/dev/null; ip netns del "$b" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
if ! ip netns add "$a" 2>/dev/null || ! ip netns add "$b" 2>/dev/null; then
  echo "skipped: cannot create network namespaces here (needs root or CAP_NET_ADMIN)"
  exit 77
fi
ip link add "va$id" type veth peer name "vb$id" || { echo "skipped: no veth"; exit 77; }
ip link set "va$id" netns "$a" && ip link set "vb$id" netns "$b"
ip netns exec "$a" ip addr add "${net}1/24" dev "va$id"
ip netns exec "$b" ip addr add "${net}2/24" dev "vb$id"
for ns in "$a" "$b"; do ip netns exec "$ns" ip link set lo up; done
ip netns exec "$a" ip link set "va$id" up && ip netns exec "$b" ip link set "vb$id" up

cat >"$work/agent" <<AGENT
#!/bin/sh
while [ "\${1#-}" != "\$1" ]; do shift; done
host=\$1; shift
[ "\$host" = "${net}2" ] && exec ip netns exec $b sh -c "\$*"
exec sh -c "\$*"
AGENT
chmod +x "$work/agent"
mpi=(mpiexec --allow-run-as-root -n 2 --host "${net}1:1,${net}2:1" --mca plm_rsh_agent "$work/agent"
     --mca btl tcp,self --mca btl_tcp_if_include "${net}0/24" --mca oob_tcp_if_include "${net}0/24")

# Each rank reports the namespace it runs in: one must be in each.
where=$(timeout 60 ip netns exec "$a" "${mpi[@]}" sh -c 'ip netns identify $$' 2>&1 | sort | tr '\n' ' ')
echo "ranks in: $where"
[ "$where" = "$a $b " ] || { echo "FAILED: the ranks are not one per namespace"; exit 1; }
timeout 120 ip netns exec "$a" "${mpi[@]}" "$test_dist" || { echo "FAILED: test_dist over TCP"; exit 1; }
timeout 120 ip netns exec "$a" "${mpi[@]}" "$train" --quick --device cpu --data-parallel \
  >"$work/train.log" 2>&1 || { cat "$work/train.log"; echo "FAILED: nnops-train over TCP"; exit 1; }
grep -q "masks identical on all 2 ranks: yes" "$work/train.log" || { cat "$work/train.log"; exit 1; }
grep -E "^(teacher|fine-tuned|student) " "$work/train.log"
# Tensor parallel across the hosts: every forward all-reduces the output over TCP; the held-out
# losses match one process's within 1e-5 relative.
timeout 120 ip netns exec "$a" "${mpi[@]}" "$train" --quick --device cpu --tensor-parallel 2 \
  >"$work/tp.log" 2>&1 || { cat "$work/tp.log"; echo "FAILED: tensor-parallel nnops-train over TCP"; exit 1; }
"$train" --quick --device cpu >"$work/one.log" 2>&1 || { cat "$work/one.log"; exit 1; }
summary() { grep -E "^(teacher|pruned|fine-tuned|student) " "$1" | awk '{print $1, $4}'; }
paste -d' ' <(summary "$work/one.log") <(summary "$work/tp.log") | awk '
  { n++; d = $2 - $4; if (d < 0) d = -d; if ($1 != $3 || d > 1e-5 * $2) bad = 1; print "  " $0 }
  END { exit (n == 4 && !bad) ? 0 : 1 }' || { echo "FAILED: tensor parallel differs from one process"; exit 1; }
echo "two hosts over TCP: passed"
