package payload

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Format is a payload contract's format.
type Format uint8

// Formats.
const (
	JSON       Format = iota + 1 // any well-formed JSON
	JSONSchema                   // JSON valid against a JSON Schema; written as published
	Avro                         // JSON matching an Avro schema; written as Avro
	Protobuf                     // JSON (protojson) of a Protobuf message; written as Protobuf
)

var formatNames = map[string]Format{"json": JSON, "jsonschema": JSONSchema, "avro": Avro, "protobuf": Protobuf}

func (f Format) String() string {
	for n, v := range formatNames {
		if v == f {
			return n
		}
	}
	return "unknown"
}

// Spec is one parsed payload rule:
//
//	FILTER=FORMAT[:SOURCE][;OPTION]...
//
// FORMAT is json, jsonschema, avro or protobuf; SOURCE (all but json) is file:PATH or
// registry:SUBJECT[/VERSION] (VERSION a number or latest, the default); OPTIONs are message=FULL.NAME
// (protobuf: the message type; default the file's first), id=N (a file schema's id in the registry, so its
// records carry the Confluent wire format), deliver=json|raw (records of the rule's topics are delivered to
// MQTT subscribers as JSON, or as they are in Kafka, the default) and framing=confluent|none (a jsonschema rule
// on a registry subject: write the Confluent wire format, magic byte and schema id before the JSON, as
// Confluent's JSON Schema serializer does; default none, the payload byte for byte).
type Spec struct {
	Raw     string
	Filter  string
	Format  Format
	File    string // file source
	Subject string // registry source
	Version int    // registry source: -1 = latest
	Message string // protobuf message full name
	ID      int    // file source: the registry id to frame records with; 0 = none (body only)
	Deliver bool   // deliver=json
	Frame   bool   // framing=confluent: a jsonschema registry rule writes the Confluent wire format
}

// Parse parses one rule.
func Parse(s string) (*Spec, error) {
	filter, rest, ok := strings.Cut(s, "=")
	if !ok || filter == "" {
		return nil, errors.New("want FILTER=FORMAT[:SOURCE][;OPTION], options repeatable")
	}
	if err := checkFilter(filter); err != nil {
		return nil, err
	}
	sp := &Spec{Raw: s, Filter: filter, Version: -1}
	parts := strings.Split(rest, ";")
	format, source, _ := strings.Cut(parts[0], ":")
	if sp.Format = formatNames[format]; sp.Format == 0 {
		return nil, fmt.Errorf("format %q: want json, jsonschema, avro or protobuf", format)
	}
	switch kind, arg, _ := strings.Cut(source, ":"); {
	case source == "" && sp.Format == JSON:
	case source == "":
		return nil, fmt.Errorf("%s needs a schema: %s:file:PATH or %s:registry:SUBJECT[/VERSION]", format, format, format)
	case sp.Format == JSON:
		return nil, errors.New("json takes no schema (use jsonschema)")
	case kind == "file" && arg != "":
		sp.File = arg
	case kind == "registry" && arg != "":
		subj, ver, hasVer := strings.Cut(arg, "/")
		sp.Subject = subj
		if hasVer && ver != "latest" {
			v, err := strconv.Atoi(ver)
			if err != nil || v < 1 {
				return nil, fmt.Errorf("registry version %q: want a number from 1 or latest", ver)
			}
			sp.Version = v
		}
	default:
		return nil, fmt.Errorf("schema source %q: want file:PATH or registry:SUBJECT[/VERSION]", source)
	}
	for _, o := range parts[1:] {
		k, v, _ := strings.Cut(o, "=")
		switch {
		case k == "message" && v != "" && sp.Format == Protobuf:
			sp.Message = v
		case k == "id" && sp.File != "" && (sp.Format == Avro || sp.Format == Protobuf):
			id, err := strconv.Atoi(v)
			if err != nil || id < 1 || id > 1<<31-1 {
				return nil, fmt.Errorf("option id=%s: want a registry schema id from 1", v)
			}
			sp.ID = id
		case k == "deliver" && (v == "json" || v == "raw"):
			sp.Deliver = v == "json"
		case k == "framing" && (v == "confluent" || v == "none") && sp.Format == JSONSchema && sp.Subject != "":
			sp.Frame = v == "confluent"
		default:
			return nil, fmt.Errorf("option %q: want message=NAME (protobuf), id=N (avro or protobuf from a file), deliver=json|raw or framing=confluent|none (jsonschema from the registry)", o)
		}
	}
	return sp, nil
}

// checkFilter checks an MQTT topic filter: '+' and '#' whole levels, '#' last.
func checkFilter(f string) error {
	lv := strings.Split(f, "/")
	for i, l := range lv {
		switch {
		case l == "#" && i != len(lv)-1:
			return errors.New("'#' must be the last level of the filter")
		case l != "#" && l != "+" && strings.ContainsAny(l, "+#"):
			return fmt.Errorf("filter level %q: '+' and '#' must be a whole level", l)
		}
	}
	return nil
}

// match reports whether the topic matches the filter [MQTT-4.7.1-2]; wildcards in the first level do not
// match '$' topics [MQTT-4.7.2-1]. It does not allocate.
func match(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}
	for {
		fl, frest, fmore := strings.Cut(filter, "/")
		if fl == "#" {
			return true
		}
		tl, trest, tmore := strings.Cut(topic, "/")
		if fl != "+" && fl != tl {
			return false
		}
		if !fmore || !tmore {
			return !fmore && !tmore || fmore && frest == "#"
		}
		filter, topic = frest, trest
	}
}
