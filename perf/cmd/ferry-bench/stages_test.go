package main

import (
	"strings"
	"testing"
)

func TestStageQuantiles(t *testing.T) {
	before, err := parseStages(strings.NewReader(`# TYPE ferry_publish_stage_seconds histogram
ferry_publish_stage_seconds_bucket{stage="kafka",le="0.001"} 10
ferry_publish_stage_seconds_bucket{stage="kafka",le="0.002"} 10
ferry_publish_stage_seconds_bucket{stage="kafka",le="+Inf"} 10
`))
	if err != nil {
		t.Fatal(err)
	}
	// 100 more in the window: 50 under 1 ms, 49 under 2 ms, 1 above.
	after, err := parseStages(strings.NewReader(`ferry_publish_stage_seconds_bucket{stage="kafka",le="0.001"} 60
ferry_publish_stage_seconds_bucket{stage="kafka",le="0.002"} 109
ferry_publish_stage_seconds_bucket{stage="kafka",le="+Inf"} 110
ferry_delivery_stage_seconds_bucket{stage="write",le="0.001"} 0
ferry_delivery_stage_seconds_bucket{stage="write",le="+Inf"} 0
`))
	if err != nil {
		t.Fatal(err)
	}
	st := stageQuantiles(before, after)
	if len(st) != 1 || st[0].Name != "publish/kafka" || st[0].Count != 100 || st[0].P50 != 1 || st[0].P99 != 2 {
		t.Fatalf("stages %+v, want publish/kafka: 100, p50 ≤ 1 ms, p99 ≤ 2 ms (an empty stage left out)", st)
	}
}
