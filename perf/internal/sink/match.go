package sink

import "strings"

// Match reports whether an MQTT topic filter matches a topic name.
func Match(filter, topic string) bool {
	for {
		if filter == "#" {
			return !strings.HasPrefix(topic, "$")
		}
		fl, frest, fmore := strings.Cut(filter, "/")
		tl, trest, tmore := strings.Cut(topic, "/")
		if fl != "+" && fl != tl {
			return false
		}
		if !fmore && !tmore {
			return true
		}
		if !fmore || !tmore {
			// "a/#" also matches "a" [MQTT-4.7.1-2]
			return fmore && frest == "#" && !tmore
		}
		filter, topic = frest, trest
	}
}
