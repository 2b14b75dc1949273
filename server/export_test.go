package server

import "time"

// NoteReadLag hands the server's read-lag signal one record as the shared reader would: one that waited waited
// in Kafka, with after records behind it in its partition (readlag.go).
func NoteReadLag(s *Server, waited time.Duration, after int64) { s.lag.note(waited, after) }
