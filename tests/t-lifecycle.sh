#!/usr/bin/env bash
# t-lifecycle: list, info, verify, delete and prune against real QEMU 7.2
# and 10.0, one churning guest with a disk each (booted side by side):
# checkpoints c1, c2, d1 (--disk-only), c3 chained; list in order (text and
# --json); info NAME and its QEMU fragment (which a real QEMU accepts);
# info --json is the manifest; verify ok, a damaged memory image (exit 1)
# and a touched disk (exit 4); NAME or IMAGE dispatch; delete under a held
# lock (exit 5); delete --disks while the VM runs merges live (block-commit)
# and keeps what the VM uses, saying why; after the VM is gone deletes merge
# offline (stream, commit) and remove the layers nothing needs; prune
# --dry-run changes nothing, prune keeps the newest per VM.
. "$(dirname "$0")/lib.sh"
. "$TOP/tests/lib/ckpt.sh"
ck_init || done_testing

CHURN="churn.mb=32 churn.verify=1000 churn.disk=/dev/vda churn.rate=0"
LIST_KEYS="created disks memory_bytes mode name own_bytes parent shared_bytes vm"

# ---- the command line, no VM needed ------------------------------------
E=$TESTDIR/empty-store
mkdir -m 700 "$E"
expect_code 0 "list of an empty store exits 0" "$SNAPCTL" -d "$E" list
expect_eq "... and prints nothing" "" "$(cat "$TESTDIR/stdout")$(cat "$TESTDIR/stderr")"
expect_code 0 "list --json of an empty store" "$SNAPCTL" -d "$E" --json list
expect_eq "... is []" "[]" "$(cat "$TESTDIR/stdout")"
expect_code 2 "list without a store is a usage error" "$SNAPCTL" list
expect_code 2 "list takes no arguments" "$SNAPCTL" -d "$E" list x
expect_code 2 "delete without a name" "$SNAPCTL" -d "$E" delete
expect_code 2 "delete with an unknown option" "$SNAPCTL" -d "$E" delete --frob x
expect_match "... naming it" "^snapctl: delete: unknown option '--frob'" "$TESTDIR/stderr"
expect_code 2 "prune without --keep" "$SNAPCTL" -d "$E" prune
expect_match "... says --keep is required" "^snapctl: prune: --keep N is required" "$TESTDIR/stderr"
expect_code 2 "prune --keep -1" "$SNAPCTL" -d "$E" prune --keep -1
expect_code 2 "prune --keep x" "$SNAPCTL" -d "$E" prune --keep x
expect_match "... quoting the value" "^snapctl: invalid --keep 'x'" "$TESTDIR/stderr"
expect_code 2 "prune takes no names" "$SNAPCTL" -d "$E" prune --keep 1 c1
expect_code 2 "info without an argument" "$SNAPCTL" info
expect_code 2 "verify with two arguments" "$SNAPCTL" verify a b
expect_code 1 "delete of an unknown checkpoint exits 1" "$SNAPCTL" -d "$E" delete nosuch
ck_one_line "... in one line" "$TESTDIR/stderr"
expect_match "... naming it" "^snapctl: no checkpoint 'nosuch' in '$E'$" "$TESTDIR/stderr"
expect_code 1 "info of nothing exits 1" "$SNAPCTL" -d "$E" info nosuch
expect_match "... neither checkpoint nor image" \
	"^snapctl: no checkpoint 'nosuch' in '$E' and no image file 'nosuch'$" "$TESTDIR/stderr"
expect_code 1 "verify of nothing exits 1" "$SNAPCTL" -d "$E" verify nosuch
ck_one_line "... in one line" "$TESTDIR/stderr"
expect_code 1 "verify of nothing without a store exits 1" "$SNAPCTL" verify nosuch

# --wait SEC: a busy store's lock is waited for, up to SEC.
mkdir -m 700 "$E/b1" "$E/b2"
flock "$E/.lock" sleep 1 &
holder=$!
sleep 0.2
expect_code 5 "delete in a locked store exits 5 at once" "$SNAPCTL" -d "$E" delete b1
expect_eq "... saying so" "snapctl: store '$E' is locked by another snapctl" "$(cat "$TESTDIR/stderr")"
t0=$(date +%s%N)
expect_code 0 "delete --wait 5 waits for the lock" "$SNAPCTL" -d "$E" delete --wait 5 b1
t1=$(date +%s%N)
expect_eq "... and deletes" "deleted checkpoint 'b1'" "$(cat "$TESTDIR/stdout")"
check "... once the holder let go (after 0.5 s, before 5 s)" test $(((t1 - t0) / 1000000)) -ge 500 -a $(((t1 - t0) / 1000000)) -lt 5000
wait "$holder"
flock "$E/.lock" sleep 7 &
holder=$!
sleep 0.2
t0=$(date +%s%N)
expect_code 5 "-w 1 with the lock held longer exits 5" "$SNAPCTL" -w 1 -d "$E" prune --keep 0
t1=$(date +%s%N)
expect_eq "... saying how long it waited" "snapctl: store '$E' is locked by another snapctl (waited 1.0 s)" "$(cat "$TESTDIR/stderr")"
check "... after 1 s" test $(((t1 - t0) / 1000000)) -ge 1000 -a $(((t1 - t0) / 1000000)) -lt 3000
check "... and b2 is still there" test -d "$E/b2"
# checkpoint and recover take the same option (their ckpt opts carry it).
expect_code 5 "checkpoint -w 1 with the lock held exits 5" "$SNAPCTL" -w 1 -s "$E/no.qmp" -d "$E" checkpoint w1
expect_eq "... after waiting 1 s" "snapctl: store '$E' is locked by another snapctl (waited 1.0 s)" "$(cat "$TESTDIR/stderr")"
expect_code 5 "recover -w 1 with the lock held exits 5" "$SNAPCTL" -w 1 -s "$E/no.qmp" -d "$E" recover
expect_match "... after waiting 1 s" "locked by another snapctl \(waited 1\.0 s\)$" "$TESTDIR/stderr"
expect_code 2 "--wait x" "$SNAPCTL" -d "$E" delete --wait x b2
expect_match "... says what it takes" "^snapctl: invalid --wait 'x': must be a whole number from 0 to 86400$" "$TESTDIR/stderr"
kill "$holder" 2>/dev/null
wait "$holder" 2>/dev/null
rm -rf "$E/b2"

versions=()
for ver in $(qemu_versions); do
	if ! vm_have_qemu "$ver"; then
		skip "QEMU $ver" "not installed (tests/deps.sh)"
		continue
	fi
	name=l${ver//./}
	mkdir -p "$TESTDIR/$name"
	qemu-img create -q -f qcow2 "$TESTDIR/$name/d0.qcow2" 64M
	if vm_start "$name" --qemu "$ver" --disk "$TESTDIR/$name/d0.qcow2" \
		--append "$CHURN" 2>"$TESTDIR/$name.err"; then
		versions+=("$ver")
	else
		not_ok "QEMU $ver: guest starts" "$(tail -n 5 "$TESTDIR/$name.err")"
	fi
done

# mtime_ns FILE: the file's modification time in ns.
mtime_ns() { stat -c '%.9Y' "$1" | tr -d .; }
# files DIR: the disk files there, sorted.
files() { (cd "$1" && ls -1 d0*.qcow2 2>/dev/null | tr '\n' ' '); }

for ver in "${versions[@]}"; do
	name=l${ver//./}
	dir=$TESTDIR/$name
	store=$dir/store
	P="QEMU $ver"
	S=(-s "$(vm_path "$name" qmp)" -d "$store")
	D=(-d "$store")
	if ! vm_wait_ready "$name" 150 >/dev/null; then
		not_ok "$P: churn READY"
		continue
	fi
	ok "$P: churn READY"
	vm_wait_serial "$name" '^CHURN DISKVERIFY ok seq=[1-9]' 60 >/dev/null

	# ---- c1, c2, d1 (disk only), c3: a chain -----------------------------
	# "created" has whole seconds: a second apart keeps the order certain.
	fail=0
	for c in c1 c2 "--disk-only d1" c3; do
		# shellcheck disable=SC2086
		"$SNAPCTL" "${S[@]}" -q checkpoint $c >>"$dir/ck.out" 2>"$dir/ck.err" || fail=1
		sleep 1.1
	done
	if [ $fail -eq 0 ]; then
		ok "$P: checkpoints c1, c2, d1 (disk only), c3"
	else
		not_ok "$P: checkpoints c1, c2, d1 (disk only), c3" "$(cat "$dir/ck.err")"
		continue
	fi
	expect_eq "$P: -q checkpoint prints nothing" "" "$(cat "$dir/ck.out" "$dir/ck.err")"
	expect_code 1 "$P: -q checkpoint that fails (c1 exists)" "$SNAPCTL" "${S[@]}" -q checkpoint c1
	ck_one_line "$P: ... still says why" "$TESTDIR/stderr"
	expect_eq "$P: the states and the VM's disk" "d0.c1.qcow2 d0.c2.qcow2 d0.c3.qcow2 d0.d1.qcow2 d0.qcow2 " "$(files "$dir")"
	expect_eq "$P: c2's disk state is d0.c2.qcow2, made by c2" "$dir/d0.c2.qcow2 c2" \
		"$(jq_get "$store/c2/manifest.json" disks.0.file) $(jq_get "$store/c2/manifest.json" disks.0.file_made_by)"
	expect_eq "$P: c1's, d0.c1.qcow2 (the original image's inode), made by c1" "$dir/d0.c1.qcow2 c1" \
		"$(jq_get "$store/c1/manifest.json" disks.0.file) $(jq_get "$store/c1/manifest.json" disks.0.file_made_by)"
	expect_eq "$P: c3's parent is d1" d1 "$(jq_get "$store/c3/manifest.json" parent)"

	# ---- list ------------------------------------------------------------
	expect_code 0 "$P: list" "$SNAPCTL" "${D[@]}" list
	cp "$TESTDIR/stdout" "$dir/list.out"
	expect_eq "$P: list: oldest first, one line each" "c1 c2 d1 c3 " "$(awk '{ printf "%s ", $1 }' "$dir/list.out")"
	expect_eq "$P: list: the parents" "- c1 c2 d1 " "$(awk '{ printf "%s ", $3 }' "$dir/list.out")"
	expect_eq "$P: list: created" "$(jq_get "$store/c2/manifest.json" created)" "$(awk '$1 == "c2" { print $2 }' "$dir/list.out")"
	expect_match "$P: list: c1's memory size, own and shared bytes" '^c1 +[^ ]+ +- +[0-9.]+(KiB|MiB|GiB) +[0-9.]+(KiB|MiB|GiB) +0B +vd0$' "$dir/list.out"
	expect_match "$P: list: d1 has no memory" '^d1 +[^ ]+ +c2 +- +- +- +vd0$' "$dir/list.out"
	expect_code 0 "$P: list --json" "$SNAPCTL" "${D[@]}" --json list
	cp "$TESTDIR/stdout" "$dir/list.json"
	expect_eq "$P: list --json: four entries" 4 "$(jq_get -n "$dir/list.json" .)"
	expect_eq "$P: list --json: the keys" "$LIST_KEYS " "$(jq_get -k "$dir/list.json" 0 | tr '\n' ' ')"
	expect_eq "$P: list --json: order" "c1 c2 d1 c3" \
		"$(for i in 0 1 2 3; do jq_get "$dir/list.json" $i.name; done | tr '\n' ' ' | sed 's/ $//')"
	expect_eq "$P: list --json: memory_bytes of c2" "$(stat -c %s "$store/c2/memory.img")" "$(jq_get "$dir/list.json" 1.memory_bytes)"
	expect_eq "$P: list --json: d1 has none" null "$(jq_get "$dir/list.json" 2.memory_bytes)"
	expect_eq "$P: list --json: d1's mode" disk-only "$(jq_get "$dir/list.json" 2.mode)"
	expect_eq "$P: list --json: c3's parent" d1 "$(jq_get "$dir/list.json" 3.parent)"
	expect_eq "$P: list --json: c1's parent" null "$(jq_get "$dir/list.json" 0.parent)"
	expect_eq "$P: list --json: disks are devices" vd0 "$(jq_get "$dir/list.json" 0.disks.0)"
	expect_eq "$P: list --json: vm" "$name" "$(jq_get "$dir/list.json" 0.vm.name)"
	# An unreadable manifest is skipped with a warning.
	mkdir -m 700 "$store/broken"
	echo '{"snapctl_manifest": ' >"$store/broken/manifest.json"
	expect_code 0 "$P: list with a broken manifest exits 0" "$SNAPCTL" "${D[@]}" list
	expect_eq "$P: ... lists the others" "c1 c2 d1 c3 " "$(awk '{ printf "%s ", $1 }' "$TESTDIR/stdout")"
	expect_match "$P: ... and warns about it" "^snapctl: warning: skipped 'broken': .*invalid JSON" "$TESTDIR/stderr"
	expect_code 0 "$P: delete removes a broken checkpoint" "$SNAPCTL" "${D[@]}" delete broken
	check "$P: ... all of it" test ! -e "$store/broken"
	mkdir -m 700 "$store/broken2"
	expect_code 0 "$P: -q delete" "$SNAPCTL" "${D[@]}" -q delete broken2
	expect_eq "$P: ... prints nothing" "" "$(cat "$TESTDIR/stdout" "$TESTDIR/stderr")"
	check "$P: ... and deletes it" test ! -e "$store/broken2"

	# ---- info --------------------------------------------------------------
	m2=$store/c2/manifest.json
	node=$(jq_get "$m2" disks.0.node)
	expect_code 0 "$P: info c2" "$SNAPCTL" "${D[@]}" info c2
	cp "$TESTDIR/stdout" "$dir/info.out"
	expect_match "$P: info names it" '^checkpoint: c2$' "$dir/info.out"
	expect_match "$P: info: parent" '^parent: +c1$' "$dir/info.out"
	expect_match "$P: info: vm" "^vm: +$name \\(uuid [0-9a-f-]{36}, QEMU ${ver//./\\.}\\.[0-9]+, machine $(vm_machine "$name")\\)$" "$dir/info.out"
	expect_match "$P: info: mode" '^mode: +live$' "$dir/info.out"
	expect_match "$P: info: memory" '^memory: .* on disk \(memory.img\) for .* of RAM' "$dir/info.out"
	expect_match "$P: info: timings" '^timings: +guest paused [0-9.]+ ms' "$dir/info.out"
	expect_match "$P: info: the disk's state" "^  state in: $dir/d0.c2.qcow2 \\(qcow2, backing $dir/d0.c1.qcow2\\)$" "$dir/info.out"
	expect_match "$P: info: the VM's own path" "^  VM writes on at: $dir/d0.qcow2 \\(its own path\\)$" "$dir/info.out"
	frag="  -blockdev '{\"driver\":\"file\",\"filename\":\"$dir/d0.c2.qcow2\",\"node-name\":\"$node-file\"}' -blockdev '{\"driver\":\"qcow2\",\"file\":\"$node-file\",\"node-name\":\"$node\"}' \\"
	if grep -qxF -- "$frag" "$dir/info.out"; then
		ok "$P: info: the -blockdev fragment"
	else
		not_ok "$P: info: the -blockdev fragment" "want: $frag" "$(grep -- -blockdev "$dir/info.out")"
	fi
	expect_match "$P: info: -incoming defer" '^  -incoming defer$' "$dir/info.out"
	expect_match "$P: info: keep -machine and the device" \
		"keep the VM's -machine $(vm_machine "$name"), its -m and its devices \\(disk vd0 on drive=$node\\)" "$dir/info.out"
	expect_code 0 "$P: info c2 --json" "$SNAPCTL" "${D[@]}" info c2 --json
	if cmp -s <(jq_get "$TESTDIR/stdout" .) <(jq_get "$m2" .); then
		ok "$P: info --json is the manifest"
	else
		not_ok "$P: info --json is the manifest" "$(head -c 300 "$TESTDIR/stdout")"
	fi
	expect_eq "$P: ... in one line" 1 "$(wc -l <"$TESTDIR/stdout")"
	expect_code 0 "$P: info d1 (disk only)" "$SNAPCTL" "${D[@]}" info d1
	expect_match "$P: ... no memory" '^memory: +none \(disk-only\)$' "$TESTDIR/stdout"

	# ---- verify ------------------------------------------------------------
	for c in c1 c2 d1 c3; do
		expect_code 0 "$P: verify $c" "$SNAPCTL" "${D[@]}" verify $c
		expect_eq "$P: ... says ok" "$c: ok" "$(cat "$TESTDIR/stdout")"
	done
	expect_code 0 "$P: verify --json c2" "$SNAPCTL" "${D[@]}" --json verify c2
	cp "$TESTDIR/stdout" "$dir/verify.json"
	expect_eq "$P: ... ok, memory and disk" "c2 true true vd0 true" \
		"$(for k in name ok memory.ok disks.0.device disks.0.ok; do jq_get "$dir/verify.json" $k; done | tr '\n' ' ' | sed 's/ $//')"
	# A damaged frame: exit 1, naming the chunk.
	img=$store/c2/memory.img
	cp "$img" "$dir/c2.img.good"
	off=$(($(stat -c %s "$img") / 2))
	printf "$(printf '\\x%02x' $(($(od -An -tu1 -j "$off" -N1 "$img") ^ 0x5a)))" |
		dd of="$img" bs=1 seek="$off" conv=notrunc status=none
	expect_code 1 "$P: verify c2 with a damaged memory image exits 1" "$SNAPCTL" "${D[@]}" verify c2
	ck_one_line "$P: ... in one line" "$TESTDIR/stderr"
	expect_match "$P: ... naming the chunk" "^snapctl: c2: '$img': chunk [0-9]+ " "$TESTDIR/stderr"
	expect_code 1 "$P: verify --json of it exits 1" "$SNAPCTL" "${D[@]}" --json verify c2
	cp "$TESTDIR/stdout" "$dir/verify-bad.json"
	expect_eq "$P: ... one document on stdout" 1 "$(wc -l <"$dir/verify-bad.json")"
	expect_eq "$P: ... its keys" "disks error memory name ok " "$(jq_get -k "$dir/verify-bad.json" . | sort | tr '\n' ' ')"
	expect_eq "$P: ... not ok, the disk ok, the memory not" "c2 false true false" \
		"$(for k in name ok disks.0.ok memory.ok; do jq_get "$dir/verify-bad.json" $k; done | tr '\n' ' ' | sed 's/ $//')"
	expect_eq "$P: ... the error, as on stderr" "snapctl: $(jq_get "$dir/verify-bad.json" error)" "$(cat "$TESTDIR/stderr")"
	cp "$dir/c2.img.good" "$img"
	expect_code 0 "$P: verify c2 once repaired" "$SNAPCTL" "${D[@]}" verify c2
	# A disk file touched since the checkpoint: exit 4.
	t=$(mtime_ns "$dir/d0.c1.qcow2")
	touch "$dir/d0.c1.qcow2"
	expect_code 4 "$P: verify c1 with its disk touched exits 4" "$SNAPCTL" "${D[@]}" verify c1
	ck_one_line "$P: ... in one line" "$TESTDIR/stderr"
	expect_match "$P: ... naming the disk and file" "^snapctl: c1: disk 'vd0': '$dir/d0.c1.qcow2' changed since the checkpoint" "$TESTDIR/stderr"
	expect_code 4 "$P: verify --json with the disk touched exits 4" "$SNAPCTL" "${D[@]}" --json verify c1
	expect_eq "$P: ... the disk not ok, memory unchecked" "false false null" \
		"$(for k in ok disks.0.ok memory; do jq_get "$TESTDIR/stdout" $k; done | tr '\n' ' ' | sed 's/ $//')"
	touch -d "@${t:0:-9}.${t: -9}" "$dir/d0.c1.qcow2"
	expect_code 0 "$P: verify c1 with the mtime put back" "$SNAPCTL" "${D[@]}" verify c1

	# ---- malformed manifests: verify refuses them, naming the field --------
	# Each a copy of c2's manifest with one field broken, renamed to its
	# directory: mal KEY SED-EXPR... writes ms/KEY/manifest.json.
	ms=$dir/mstore
	mkdir -m 700 -p "$ms"
	mal() {
		local k=$1
		shift
		mkdir -m 700 "$ms/$k"
		sed -e "s/^  \"name\": \"c2\"/  \"name\": \"$k\"/" "$@" "$m2" >"$ms/$k/manifest.json"
	}
	# A key replaced: the old one renamed away, the new value inserted.
	mal disks_str -e 's/^  "disks":/  "old_disks":/' -e '1a\  "disks": "x",'
	mal disks_null -e 's/^  "disks":/  "old_disks":/' -e '1a\  "disks": null,'
	mal memory_str -e 's/^  "memory":/  "old_memory":/' -e '1a\  "memory": "x",'
	mal version2 -e 's/"snapctl_manifest": 1/"snapctl_manifest": 2/'
	mal mode_bogus -e 's/^  "mode": "live"/  "mode": "bogus"/'
	mal format_sh -e 's/"format": "qcow2"/"format": "raw; rm -rf \/"/'
	mal othername -e 's/^  "name": "othername"/  "name": "c2"/'
	mal pages_neg -e 's/"pages": [0-9]*/"pages": -5/'
	mal size_str -e 's/"bytes_on_disk": \([0-9]*\)/"bytes_on_disk": "\1"/'
	mal disksize_str -e 's/"size": \([0-9]*\)/"size": "\1"/'
	for k in disks_str:'disks must be an array' disks_null:'disks must be an array' \
		memory_str:'memory must be an object or null' \
		version2:'manifest version 2 is not supported \(this snapctl reads version 1\)' \
		mode_bogus:'invalid manifest: mode is not live, pause, background or disk-only' \
		format_sh:'invalid manifest: disks\[0\]\.format is not a disk image format' \
		othername:'invalid manifest: name differs from the checkpoint.s directory' \
		pages_neg:'invalid manifest: memory\.pages must be a non-negative integer' \
		size_str:'invalid manifest: memory\.bytes_on_disk must be a non-negative integer' \
		disksize_str:'invalid manifest: disks\[0\]\.size must be a non-negative integer'; do
		expect_code 1 "$P: verify of a manifest with ${k%%:*} exits 1" "$SNAPCTL" -d "$ms" verify "${k%%:*}"
		expect_eq "$P: ... prints nothing on stdout" "" "$(cat "$TESTDIR/stdout")"
		ck_one_line "$P: ... one line" "$TESTDIR/stderr"
		expect_match "$P: ... naming the field" "^snapctl: '$ms/${k%%:*}/manifest.json': .*${k#*:}$" "$TESTDIR/stderr"
	done
	expect_code 1 "$P: verify --json of a malformed manifest" "$SNAPCTL" -d "$ms" --json verify mode_bogus
	expect_eq "$P: ... one document: not ok, nothing checked" "mode_bogus false null 0" \
		"$(for k in name ok memory; do jq_get "$TESTDIR/stdout" $k; done | tr '\n' ' ')$(jq_get -n "$TESTDIR/stdout" disks)"
	expect_match "$P: ... naming the field" '"error":".*invalid manifest: mode is not' "$TESTDIR/stdout"
	expect_code 0 "$P: list of a store of malformed manifests" "$SNAPCTL" -d "$ms" list
	expect_eq "$P: ... lists none of them" "" "$(cat "$TESTDIR/stdout")"
	expect_eq "$P: ... and warns for each" 10 "$(grep -c "^snapctl: warning: skipped '" "$TESTDIR/stderr")"
	# Control characters from a manifest are escaped on a terminal's output.
	rm -rf "$ms"/*
	mal esc -e 's/"device": "vd0"/"device": "vd0\\u001b[2J"/' -e 's/"machine": "\([^"]*\)"/"machine": "\1\\u001b]0;x\\u0007"/'
	expect_code 0 "$P: info of a manifest holding ESC" "$SNAPCTL" -d "$ms" info esc
	expect_eq "$P: ... prints no control character" 0 "$(tr -d '\n' <"$TESTDIR/stdout" | LC_ALL=C grep -c '[[:cntrl:]]')"
	expect_match "$P: ... but \\x1b for it" '^disk vd0\\x1b\[2J:$' "$TESTDIR/stdout"
	expect_match "$P: ... and \\x07" "machine $(vm_machine "$name")\\\\x1b\\]0;x\\\\x07\\)$" "$TESTDIR/stdout"
	expect_code 0 "$P: list of it" "$SNAPCTL" -d "$ms" list
	expect_match "$P: ... escapes the device" '^esc .* vd0\\x1b\[2J$' "$TESTDIR/stdout"
	expect_eq "$P: ... and prints no control character" 0 "$(tr -d '\n' <"$TESTDIR/stdout" | LC_ALL=C grep -c '[[:cntrl:]]')"
	expect_code 0 "$P: info --json keeps the manifest as written" "$SNAPCTL" -d "$ms" --json info esc
	expect_match "$P: ... (JSON escapes it)" '"vd0\\u001[bB]\[2J"' "$TESTDIR/stdout"
	rm -rf "$ms"

	# ---- NAME or IMAGE -----------------------------------------------------
	expect_code 0 "$P: info of an image path" "$SNAPCTL" "${D[@]}" info "$store/c1/memory.img"
	expect_match "$P: ... is the image's info" '^image: ' "$TESTDIR/stdout"
	expect_code 0 "$P: verify of an image path" "$SNAPCTL" verify "$store/c1/memory.img"
	expect_eq "$P: ... ok" "$store/c1/memory.img: ok" "$(cat "$TESTDIR/stdout")"
	mkdir -p "$dir/cwd"
	cp "$store/c1/memory.img" "$dir/cwd/c2"
	cp "$store/c1/memory.img" "$dir/cwd/loose.img"
	cd "$dir/cwd" || exit 1
	expect_code 0 "$P: a name that is both: the checkpoint wins" "$SNAPCTL" "${D[@]}" info c2
	expect_match "$P: ... (checkpoint c2)" '^checkpoint: c2$' "$TESTDIR/stdout"
	expect_code 0 "$P: ./NAME is the image file" "$SNAPCTL" "${D[@]}" info ./c2
	expect_match "$P: ... (image)" '^image: ' "$TESTDIR/stdout"
	expect_code 0 "$P: without a store NAME is the image file" "$SNAPCTL" info c2
	expect_match "$P: ... (image)" '^image: ' "$TESTDIR/stdout"
	expect_code 0 "$P: no such checkpoint but an image file: the image" "$SNAPCTL" "${D[@]}" verify loose.img
	expect_eq "$P: ... ok" "loose.img: ok" "$(cat "$TESTDIR/stdout")"
	expect_code 0 "$P: a store that does not exist: the image" "$SNAPCTL" -d "$dir/nostore" verify loose.img
	expect_code 1 "$P: an image path that does not exist" "$SNAPCTL" "${D[@]}" info ./c1
	ck_one_line "$P: ... in one line" "$TESTDIR/stderr"
	expect_code 1 "$P: a file that is no image" "$SNAPCTL" "${D[@]}" verify "$dir/d0.qcow2"
	cd "$TOP" || exit 1

	# ---- delete under a held lock --------------------------------------------
	( exec 9>"$store/.lock"; flock -n 9 && exec sleep 30 ) &
	holder=$!
	sleep 0.3
	expect_code 5 "$P: delete in a locked store exits 5" "$SNAPCTL" "${D[@]}" delete c1
	kill "$holder" 2>/dev/null
	wait "$holder" 2>/dev/null
	expect_match "$P: ... saying it is locked" "^snapctl: store '.*' is locked by another snapctl$" "$TESTDIR/stderr"
	check "$P: ... and c1 is still there" test -f "$store/c1/manifest.json"
	expect_code 1 "$P: delete with one unknown name exits 1" "$SNAPCTL" "${D[@]}" delete c1 nosuch
	expect_match "$P: ... naming it" "^snapctl: no checkpoint 'nosuch' in " "$TESTDIR/stderr"
	check "$P: ... and deletes nothing" test -f "$store/c1/manifest.json"

	# ---- delete --disks while the VM runs: a live merge ---------------------
	# d0.qcow2 (the VM's disk) <- d0.c3.qcow2 (c3) <- d0.d1.qcow2 (d1) <-
	# d0.c2.qcow2 (c2) <- d0.c1.qcow2 (c1, the VM's original image).  QEMU
	# knows that original image as d0.qcow2, which names the top now: it
	# is never reopened (a commit into it would write the top), so c1's
	# image is streamed into c2's with an explicit (empty) backing name.
	hdrs() { qemu-img info --backing-chain --output=json -U "$dir/d0.qcow2" | sed -n 's/^ *"backing-filename": "\(.*\)",$/\1/p' | tr '\n' ' '; }
	expect_eq "$P: the chain's backing names before" "d0.c3.qcow2 d0.d1.qcow2 d0.c2.qcow2 d0.c1.qcow2 " "$(hdrs)"
	# A qcow2 file beside the disk that no checkpoint knows (the user's
	# own overlay, a layer revert kept) backs onto c1's image: it stays.
	qemu-img create -q -f qcow2 -b d0.c1.qcow2 -F qcow2 "$dir/mine.qcow2"
	expect_code 0 "$P: delete c1 --disks while the VM runs, an overlay of the user's on c1's image" "$SNAPCTL" "${S[@]}" delete c1 --disks
	cp "$TESTDIR/stdout" "$dir/del1.out"
	expect_match "$P: ... deleted c1" "^deleted checkpoint 'c1'$" "$dir/del1.out"
	check "$P: ... its directory is gone" test ! -e "$store/c1"
	expect_match "$P: ... keeps c1's image: the user's overlay backs onto it" \
		"^kept '$dir/d0.c1.qcow2': .*the backing file of '$dir/mine.qcow2'" "$dir/del1.out"
	expect_eq "$P: ... said once" 1 "$(grep -o "mine.qcow2" "$dir/del1.out" | wc -l)"
	check "$P: ... the image is there" test -f "$dir/d0.c1.qcow2"
	check "$P: ... the merge journal keeps it" test -f "$store/.merge.json"
	rm -f "$dir/mine.qcow2"
	expect_code 0 "$P: once the overlay is gone, recover -s finishes the merge" "$SNAPCTL" "${S[@]}" recover
	cp "$TESTDIR/stdout" "$dir/rec1.out"
	expect_match "$P: ... streams c1's image into c2's, live (QEMU knows c1's by the VM's path)" \
		"^finished merging '$dir/d0.c1.qcow2' into '$dir/d0.c2.qcow2'$" "$dir/rec1.out"
	expect_match "$P: ... removes it" "^removed '$dir/d0.c1.qcow2'$" "$dir/rec1.out"
	check "$P: ... the journal is gone" test ! -e "$store/.merge.json"
	expect_match "$P: ... keeps d0.qcow2: not snapctl's" "^kept '$dir/d0.qcow2': not created by snapctl(;|$)" "$dir/del1.out"
	expect_match "$P: ... open by QEMU" "^kept '$dir/d0.qcow2': .*open by process $(vm_pid "$name") \\(" "$dir/del1.out"
	expect_match "$P: ... used by the VM" "^kept '$dir/d0.qcow2': .*in use by the VM \\(-s\\)" "$dir/del1.out"
	expect_eq "$P: ... on disk" "d0.c2.qcow2 d0.c3.qcow2 d0.d1.qcow2 d0.qcow2 " "$(files "$dir")"
	expect_eq "$P: ... c2's disk is still d0.c2.qcow2, made by c2" "$dir/d0.c2.qcow2 c2" \
		"$(jq_get "$store/c2/manifest.json" disks.0.file) $(jq_get "$store/c2/manifest.json" disks.0.file_made_by)"
	expect_eq "$P: ... the chain's backing names after (no VM path, no temporary name)" "d0.c3.qcow2 d0.d1.qcow2 d0.c2.qcow2 " "$(hdrs)"
	for c in c2 d1 c3; do
		expect_code 0 "$P: ... verify $c" "$SNAPCTL" "${D[@]}" verify $c
	done
	expect_eq "$P: ... the guest runs" running "$(ck_status "$name")"

	# ---- the VM is gone: offline merges -------------------------------------
	vm_kill "$name" KILL
	expect_code 0 "$P: delete c3 --disks --json once the VM is gone" "$SNAPCTL" "${D[@]}" --json delete --disks c3
	cp "$TESTDIR/stdout" "$dir/del3.json"
	expect_eq "$P: ... deleted c3" c3 "$(jq_get "$dir/del3.json" deleted.0)"
	expect_eq "$P: ... streams c3's image into the VM's disk, offline" "c3 vd0 stream false $dir/d0.c3.qcow2 $dir/d0.qcow2 true" \
		"$(for k in checkpoint device how live from into merged; do jq_get "$dir/del3.json" merged.0.$k; done | tr '\n' ' ' | sed 's/ $//')"
	check "$P: ... with its size" test "$(jq_get "$dir/del3.json" merged.0.bytes)" -gt 0
	expect_eq "$P: ... two disk files considered" 2 "$(jq_get -n "$dir/del3.json" disks)"
	expect_eq "$P: ... removes d0.c3.qcow2" "$dir/d0.c3.qcow2 true []" \
		"$(jq_get "$dir/del3.json" disks.0.file) $(jq_get "$dir/del3.json" disks.0.removed) $(jq_get "$dir/del3.json" disks.0.reasons)"
	expect_eq "$P: ... keeps d0.qcow2: not snapctl's" "$dir/d0.qcow2 false not created by snapctl" \
		"$(jq_get "$dir/del3.json" disks.1.file) $(jq_get "$dir/del3.json" disks.1.removed) $(jq_get "$dir/del3.json" disks.1.reasons.0)"
	expect_eq "$P: ... on disk" "d0.c2.qcow2 d0.d1.qcow2 d0.qcow2 " "$(files "$dir")"
	expect_eq "$P: ... the VM's disk is backed by d1's state (relative name)" "d0.d1.qcow2 d0.c2.qcow2 " "$(hdrs)"
	expect_code 0 "$P: verify d1" "$SNAPCTL" "${D[@]}" verify d1
	expect_code 0 "$P: delete c2 --disks" "$SNAPCTL" "${D[@]}" delete --disks c2
	cp "$TESTDIR/stdout" "$dir/del2.out"
	expect_match "$P: ... commits d1's image into c2's, offline" \
		"^merged '$dir/d0.d1.qcow2' into '$dir/d0.c2.qcow2' \\(commit, offline, " "$dir/del2.out"
	expect_match "$P: ... removes d1's old image" "^removed '$dir/d0.d1.qcow2'$" "$dir/del2.out"
	expect_match "$P: ... keeps d0.c2.qcow2: d1's disk now" "^kept '$dir/d0.c2.qcow2': .*the disk of checkpoint 'd1'(;|$)" "$dir/del2.out"
	expect_eq "$P: ... on disk" "d0.c2.qcow2 d0.qcow2 " "$(files "$dir")"
	expect_eq "$P: ... d1 names d0.c2.qcow2 with its device and inode" "$dir/d0.c2.qcow2 $(stat -c '%d %i' "$dir/d0.c2.qcow2")" \
		"$(jq_get "$store/d1/manifest.json" disks.0.file) $(jq_get "$store/d1/manifest.json" disks.0.file_dev) $(jq_get "$store/d1/manifest.json" disks.0.file_ino)"
	expect_eq "$P: ... d0.qcow2 is backed by it (relative name in its header)" "d0.c2.qcow2 " "$(hdrs)"
	expect_code 0 "$P: verify d1 after all that" "$SNAPCTL" "${D[@]}" verify d1

	# ---- prune, per VM -----------------------------------------------------------
	# Another VM's two checkpoints, as the store would hold them.
	for x in x1:2000-01-01T00:00:00Z x2:2000-01-02T00:00:00Z; do
		mkdir -m 700 "$store/${x%%:*}"
		sed -e 's/"uuid": "[^"]*"/"uuid": "00000000-0000-0000-0000-000000000001"/' \
			-e "s/\"name\": \"$name\"/\"name\": \"other\"/" \
			-e "s/\"name\": \"d1\"/\"name\": \"${x%%:*}\"/" \
			-e "s/\"created\": \"[^\"]*\"/\"created\": \"${x#*:}\"/" \
			"$store/d1/manifest.json" >"$store/${x%%:*}/manifest.json"
	done
	expect_code 0 "$P: list with another VM's checkpoints" "$SNAPCTL" "${D[@]}" list
	expect_eq "$P: list with two VMs" "x1 x2 d1 " "$(awk '{ printf "%s ", $1 }' "$TESTDIR/stdout")"
	snap() { (cd "$store" && find . | sort | tr '\n' ' '); files "$dir"; }
	b=$(snap)
	expect_code 0 "$P: prune --keep 1 --dry-run" "$SNAPCTL" "${D[@]}" prune --keep 1 --dry-run
	expect_eq "$P: ... would delete x1 only" "would delete checkpoint 'x1'" "$(cat "$TESTDIR/stdout")"
	expect_eq "$P: ... and changes nothing" "$b" "$(snap)"
	expect_code 0 "$P: prune --keep 1" "$SNAPCTL" "${D[@]}" prune --keep 1
	expect_eq "$P: ... deleted x1" "deleted checkpoint 'x1'" "$(cat "$TESTDIR/stdout")"
	expect_eq "$P: ... the newest of each VM is left" "d1 x2 " "$(cd "$store" && ls -1 | tr '\n' ' ')"
	cp "$store/x2/manifest.json" "$dir/x2.manifest"

	# ---- delete --disks proves what snapctl made: device and inode ---------------
	# A manifest edited to name a file outside the store as its overlay
	# (issue 11) must not get that file removed.
	printf 'not yours\n' >"$dir/victim.img"
	mkdir -m 700 "$store/x4"
	sed -e 's/"name": "d1"/"name": "x4"/' \
		-e "s|\"overlay\": \"[^\"]*\"|\"overlay\": \"$dir/victim.img\"|" \
		"$store/d1/manifest.json" >"$store/x4/manifest.json"
	expect_eq "$P: x4's manifest names the victim as its overlay" "$dir/victim.img" "$(jq_get "$store/x4/manifest.json" disks.0.overlay)"
	expect_code 0 "$P: delete --disks x4" "$SNAPCTL" "${D[@]}" delete --disks x4
	expect_match "$P: ... keeps the file it did not make" "^kept '$dir/victim.img': not created by snapctl(;|$)" "$TESTDIR/stdout"
	expect_eq "$P: ... which is intact" "not yours" "$(cat "$dir/victim.img")"
	rm -f "$dir/victim.img"
	expect_eq "$P: d1's state records its device and inode" "$(stat -c '%d %i' "$dir/d0.c2.qcow2")" \
		"$(jq_get "$store/d1/manifest.json" disks.0.file_dev) $(jq_get "$store/d1/manifest.json" disks.0.file_ino)"
	expect_eq "$P: ... the VM's own path none (never snapctl's to delete)" null \
		"$(jq_get "$store/d1/manifest.json" disks.0.overlay_ino)"

	# ---- the info fragment starts a real QEMU on d1's disk -----------------------
	expect_code 0 "$P: info d1" "$SNAPCTL" "${D[@]}" info d1
	args=()
	while IFS= read -r l; do
		eval "set -- ${l% \\}"
		args+=("$@")
	done < <(grep '^  -blockdev ' "$TESTDIR/stdout")
	dnode=$(jq_get "$store/d1/manifest.json" disks.0.node)
	qargs=()
	for a in "${args[@]}"; do qargs+=(--arg "$a"); done
	if vm_start "t$name" --qemu "$ver" --no-kernel --incoming --machine "$(jq_get "$store/d1/manifest.json" vm.machine)" \
		"${qargs[@]}" --arg -device --arg "virtio-blk-pci,drive=$dnode,id=vd0,bus=pcie.0,addr=0x10" 2>"$dir/t.err"; then
		ok "$P: QEMU accepts info's -blockdev options"
		expect_eq "$P: ... and opens d1's disk" "$dir/d0.c2.qcow2" "$(ck_active_file "t$name" vd0)"
		expect_code 0 "$P: prune --keep 0 --disks --dry-run while it runs" "$SNAPCTL" "${D[@]}" prune --keep 0 --disks --dry-run
		expect_match "$P: ... would keep d0.c2.qcow2: open" "^would keep '$dir/d0.c2.qcow2': .*open by process $(vm_pid "t$name") " "$TESTDIR/stdout"
		vm_kill "t$name" KILL
	else
		not_ok "$P: QEMU accepts info's -blockdev options" "$(tail -n 5 "$dir/t.err")" "${args[*]}"
	fi

	# ---- prune --keep 0 --disks: everything snapctl made and nothing needs -------
	expect_code 0 "$P: prune --keep 0 --disks" "$SNAPCTL" "${D[@]}" prune --keep 0 --disks
	cp "$TESTDIR/stdout" "$dir/prune0.out"
	expect_match "$P: ... streams d1's disk into the VM's" "^merged '$dir/d0.c2.qcow2' into '$dir/d0.qcow2' \(stream, offline, " "$dir/prune0.out"
	expect_match "$P: ... removes d0.c2.qcow2 (d1's state)" "^removed '$dir/d0.c2.qcow2'$" "$dir/prune0.out"
	expect_eq "$P: ... the VM's disk stands alone" "" "$(hdrs)"
	expect_match "$P: ... keeps d0.qcow2" "^kept '$dir/d0.qcow2': not created by snapctl$" "$dir/prune0.out"
	expect_eq "$P: ... the store is empty" "" "$(cd "$store" && ls -1)"
	expect_eq "$P: ... left: the VM's disk" "d0.qcow2 " "$(files "$dir")"
	mkdir -m 700 "$store/x3"
	sed -e 's/"name": "x2"/"name": "x3"/' "$dir/x2.manifest" >"$store/x3/manifest.json"
	expect_code 0 "$P: -q prune --keep 0" "$SNAPCTL" "${D[@]}" -q prune --keep 0
	expect_eq "$P: ... prints nothing" "" "$(cat "$TESTDIR/stdout" "$TESTDIR/stderr")"
	check "$P: ... and prunes" test ! -e "$store/x3"
	expect_code 0 "$P: list of the emptied store" "$SNAPCTL" "${D[@]}" list
	expect_eq "$P: ... prints nothing" "" "$(cat "$TESTDIR/stdout")"
done

vm_stop_all
done_testing
