package payload

import (
	"encoding/json"
	"errors"
	"fmt"
)

// Reasons a payload is refused, for metrics (ReasonNames) and errors.
const (
	ReasonNotJSON     = iota // the payload is not one well-formed JSON value
	ReasonSchema             // it does not match the schema
	ReasonUnavailable        // the rule's schema is not loaded (registry unreachable, subject unknown)
	NumReasons
)

// ReasonNames are the metric label values of the reasons, by index.
var ReasonNames = [NumReasons]string{"not_json", "schema_mismatch", "schema_unavailable"}

// Invalid is the error of a payload that does not meet its rule's contract.
type Invalid struct {
	Reason int
	Err    error
}

func (e *Invalid) Error() string {
	if e.Reason == ReasonNotJSON {
		return "payload is not JSON: " + e.Err.Error()
	}
	return "payload does not match the schema: " + e.Err.Error()
}

func (e *Invalid) Unwrap() error { return e.Err }

// codec validates (and converts) a device's payload and decodes a record's body back to JSON.
type codec interface {
	// ingest appends to dst what is written to Kafka for the payload (itself, or its conversion), or fails
	// with *Invalid. It runs on an event loop: CPU only, no I/O.
	ingest(dst, payload []byte) ([]byte, error)
	// toJSON decodes a record body (after the Confluent header) to JSON. index is Protobuf's message index.
	toJSON(body []byte, index []int) ([]byte, error)
}

type jsonCodec struct{}

func (jsonCodec) ingest(dst, payload []byte) ([]byte, error) {
	if !json.Valid(payload) {
		var v any
		err := json.Unmarshal(payload, &v) // only to say where: Valid does not
		if err == nil {
			err = errors.New("invalid JSON")
		}
		return dst, &Invalid{Reason: ReasonNotJSON, Err: err}
	}
	return append(dst, payload...), nil
}

func (jsonCodec) toJSON(body []byte, _ []int) ([]byte, error) { return body, nil }

// ref is a schema another one refers to (a registry reference): the name the referring schema uses for it
// (Protobuf: the import path; JSON Schema: the $ref URL, relative to the referring schema; Avro: unused, the
// named types it defines are what count) and its text.
type ref struct {
	name, text string
	subject    string // where it came from
	version    int
}

// compile builds the codec of a format from a schema's text and the schemas it refers to, those referred to
// first.
func compile(f Format, text, message string, refs []ref) (codec, error) {
	switch f {
	case JSON:
		return jsonCodec{}, nil
	case JSONSchema:
		return newJSONSchema(text, refs)
	case Avro:
		return newAvro(text, refs)
	case Protobuf:
		return newProto(text, message, refs)
	}
	return nil, fmt.Errorf("BUG: format %d", f)
}
