# bash collect.sh NAME PATH...: tar PATHs (relative to /tmp/proj) with the logs and timings into $OUT/NAME.tgz.* (15 MB pieces)
. /tmp/dev/env.sh
name=$1; shift
cp -f timings_*.jsonl /tmp/out/ 2>/dev/null
tar czf /tmp/$name.tgz "$@" /tmp/out 2>/dev/null
split -b 15M /tmp/$name.tgz $OUT/$name.tgz.
ls -la $OUT | tail -n +2
