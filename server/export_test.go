package server

import "time"

// NoteReadLag hands the server's read-lag signal one record as the shared reader would: one that waited waited
// in Kafka, with after records behind it in its partition (readlag.go).
func NoteReadLag(s *Server, waited time.Duration, after int64) { s.lag.note(waited, after) }

// SetWillHook makes fn run just before the server publishes a will due at once whose claim it read back as the
// winner; fn returning true stands for the process killed there (the will is not published).
func SetWillHook(s *Server, fn func() bool) { s.willHook.Store(&fn) }

// SetClaimHook makes fn run when Kafka holds the pending will of a claim this server writes, before the claim
// itself is written; fn returns true if it killed the server there (the claim is then not written).
func SetClaimHook(s *Server, fn func() bool) { s.claimHook.Store(&fn) }
