package main

import (
	"strings"
	"testing"
)

// The messages topic has one partition with the embedded Kafka unless --messages-partitions says otherwise,
// and --partitions on a cluster; the retention bound's minimum is counted on the messages topic's partitions.
func TestMessagesPartitionsDefault(t *testing.T) {
	noEnv := func(string) string { return "" }
	for _, c := range []struct {
		args []string
		want int
	}{
		{nil, 1},
		{[]string{"--partitions", "12"}, 1},
		{[]string{"--messages-partitions", "4"}, 4},
		{[]string{"--kafka-brokers", "127.0.0.1:1"}, 6},
		{[]string{"--kafka-brokers", "127.0.0.1:1", "--partitions", "12"}, 12},
		{[]string{"--kafka-brokers", "127.0.0.1:1", "--messages-partitions", "3"}, 3},
	} {
		cfg, err := loadConfig(c.args, noEnv)
		if err != nil {
			t.Fatalf("%v: %v", c.args, err)
		}
		if got := cfg.messagesPartitions(); got != c.want {
			t.Errorf("%v: messages topic partitions %d, want %d", c.args, got, c.want)
		}
	}
	// 8 MiB is 4 MiB for each of 2 partitions: enough for one, too little for three.
	if _, err := loadConfig([]string{"--embedded-retention-bytes", "8388608", "--partitions", "3"}, noEnv); err != nil {
		t.Errorf("8 MiB with the messages topic's one partition refused: %v", err)
	}
	_, err := loadConfig([]string{"--embedded-retention-bytes", "8388608", "--messages-partitions", "3"}, noEnv)
	if err == nil || !strings.Contains(err.Error(), "--messages-partitions 3") {
		t.Errorf("8 MiB for 3 partitions: err %v, want a refusal naming --messages-partitions 3", err)
	}
	if _, err := loadConfig([]string{"--messages-partitions", "-1"}, noEnv); err == nil {
		t.Error("--messages-partitions -1 accepted")
	}
}
