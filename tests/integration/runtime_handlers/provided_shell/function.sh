function handler () {
  EVENT_DATA=$1
  echo "handling $EVENT_DATA" 1>&2
  echo "{\"echo\": $EVENT_DATA, \"pid\": $$, \"tmp\": \"$TMPDIR\"}"
}

function slow () {
  sleep 30
  echo '{}'
}
