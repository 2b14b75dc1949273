module github.com/ferrymq/ferry/perf/peers/floor

go 1.26.8

require (
	github.com/ferrymq/ferry/perf v0.0.0-00010101000000-000000000000
	github.com/panjf2000/gnet/v2 v2.10.0
)

require (
	github.com/panjf2000/ants/v2 v2.12.1 // indirect
	github.com/valyala/bytebufferpool v1.0.0 // indirect
	go.uber.org/multierr v1.11.0 // indirect
	go.uber.org/zap v1.28.0 // indirect
	golang.org/x/sync v0.20.0 // indirect
	golang.org/x/sys v0.45.0 // indirect
	gopkg.in/natefinch/lumberjack.v2 v2.2.1 // indirect
)

// The floor speaks MQTT with the harness's own codec (perf/internal/wire), from this checkout.
replace github.com/ferrymq/ferry/perf => ../..
