package payload

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/hamba/avro/v2"
)

// Avro: the device's JSON is decoded (numbers kept exact) and encoded in Avro binary by walking the schema, so a
// value is checked against its field's type as it is written: a missing field without a default, a string
// where a long is due, a number out of an int's range or an unknown enum symbol are errors naming the field.
// hamba/avro parses the schema and decodes records for delivery as JSON (a real Avro library, which is also
// what the tests decode Ferry's records with). Unions take the plain JSON value (the first branch that accepts
// it; null for null) or Avro's JSON encoding {"branch": value}. bytes and fixed take a string whose code
// points are the bytes (Avro's JSON encoding).

type avroCodec struct{ s avro.Schema }

func newAvro(text string, refs []ref) (*avroCodec, error) {
	cache := &avro.SchemaCache{} // the referenced schemas' named types, for the schema to use by name
	for _, r := range refs {
		if _, err := avro.ParseWithCache(r.text, "", cache); err != nil {
			return nil, fmt.Errorf("cannot parse referenced Avro schema %s: %w", r.name, err)
		}
	}
	s, err := avro.ParseWithCache(text, "", cache)
	if err != nil {
		return nil, fmt.Errorf("cannot parse Avro schema: %w", err)
	}
	return &avroCodec{s: s}, nil
}

func (a *avroCodec) ingest(dst, payload []byte) ([]byte, error) {
	v, err := parseJSON(payload)
	if err != nil {
		return dst, &Invalid{Reason: ReasonNotJSON, Err: err}
	}
	out, err := appendAvro(dst, a.s, v, make([]string, 0, 16))
	if err != nil {
		return dst, &Invalid{Reason: ReasonSchema, Err: err}
	}
	return out, nil
}

func (a *avroCodec) toJSON(body []byte, _ []int) ([]byte, error) {
	var v any
	if err := avro.Unmarshal(a.s, body, &v); err != nil {
		return nil, err
	}
	return json.Marshal(jsonable(v))
}

// jsonable makes a decoded Avro value marshalable: []byte (bytes, fixed) becomes a string of its bytes as
// code points, as Avro's JSON encoding writes them.
func jsonable(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = jsonable(e)
		}
	case []any:
		for i, e := range x {
			x[i] = jsonable(e)
		}
	case []byte:
		r := make([]rune, len(x))
		for i, b := range x {
			r[i] = rune(b)
		}
		return string(r)
	}
	return v
}

// avroErr names the value by its path: field names and array indexes from the record's root. The path is a
// stack of names, joined only when there is an error (the walk itself must not allocate per field).
func avroErr(path []string, format string, a ...any) error {
	p := "/" + strings.Join(path, "/")
	return fmt.Errorf("%s: %s", p, fmt.Sprintf(format, a...))
}

func appendAvro(b []byte, s avro.Schema, v any, path []string) ([]byte, error) {
	switch s := s.(type) {
	case *avro.RefSchema:
		return appendAvro(b, s.Schema(), v, path)
	case *avro.NullSchema:
		if v != nil {
			return b, avroErr(path, "want null")
		}
		return b, nil
	case *avro.PrimitiveSchema:
		return appendPrimitive(b, s.Type(), v, path)
	case *avro.RecordSchema:
		m, ok := v.(map[string]any)
		if !ok {
			return b, avroErr(path, "want an object (record %s)", s.FullName())
		}
		for _, f := range s.Fields() {
			fv, ok := m[f.Name()]
			if !ok {
				if !f.HasDefault() {
					return b, avroErr(append(path, f.Name()), "missing (no default)")
				}
				fv = defaultJSON(f.Default())
			}
			var err error
			if b, err = appendAvro(b, f.Type(), fv, append(path, f.Name())); err != nil {
				return b, err
			}
		}
		for k := range m {
			if !hasField(s, k) {
				return b, avroErr(append(path, k), "not a field of record %s", s.FullName())
			}
		}
		return b, nil
	case *avro.EnumSchema:
		str, ok := v.(string)
		if ok {
			for i, sym := range s.Symbols() {
				if sym == str {
					return binary.AppendVarint(b, int64(i)), nil
				}
			}
		}
		return b, avroErr(path, "want one of the symbols %v", s.Symbols())
	case *avro.ArraySchema:
		arr, ok := v.([]any)
		if !ok {
			return b, avroErr(path, "want an array")
		}
		if len(arr) > 0 {
			b = binary.AppendVarint(b, int64(len(arr)))
			for i, e := range arr {
				var err error
				if b, err = appendAvro(b, s.Items(), e, append(path, strconv.Itoa(i))); err != nil {
					return b, err
				}
			}
		}
		return append(b, 0), nil
	case *avro.MapSchema:
		m, ok := v.(map[string]any)
		if !ok {
			return b, avroErr(path, "want an object (map)")
		}
		if len(m) > 0 {
			b = binary.AppendVarint(b, int64(len(m)))
			for k, e := range m {
				b = binary.AppendVarint(b, int64(len(k)))
				b = append(b, k...)
				var err error
				if b, err = appendAvro(b, s.Values(), e, append(path, k)); err != nil {
					return b, err
				}
			}
		}
		return append(b, 0), nil
	case *avro.FixedSchema:
		raw, ok := codePoints(v)
		if !ok || len(raw) != s.Size() {
			return b, avroErr(path, "want a string of %d bytes (fixed %s)", s.Size(), s.FullName())
		}
		return append(b, raw...), nil
	case *avro.UnionSchema:
		return appendUnion(b, s, v, path)
	}
	return b, avroErr(path, "unsupported Avro type %s", s.Type())
}

func hasField(s *avro.RecordSchema, name string) bool {
	for _, f := range s.Fields() {
		if f.Name() == name {
			return true
		}
	}
	return false
}

func appendUnion(b []byte, s *avro.UnionSchema, v any, path []string) ([]byte, error) {
	types := s.Types()
	if m, ok := v.(map[string]any); ok && len(m) == 1 {
		for k, e := range m { // Avro's JSON encoding of a union: {"branch name": value}
			for i, t := range types {
				if branchName(t) == k {
					return appendAvro(binary.AppendVarint(b, int64(i)), t, e, path)
				}
			}
		}
	}
	var first error
	for i, t := range types {
		start := len(b)
		out, err := appendAvro(binary.AppendVarint(b, int64(i)), t, v, path)
		if err == nil {
			return out, nil
		}
		if first == nil {
			first = err
		}
		b = b[:start]
	}
	if len(types) == 2 && types[0].Type() == avro.Null && v != nil {
		_, err := appendAvro(b, types[1], v, path) // an optional field: its type's error says more
		return b, err
	}
	return b, avroErr(path, "matches no branch of the union")
}

func branchName(s avro.Schema) string {
	if n, ok := s.(avro.NamedSchema); ok {
		return n.FullName()
	}
	if r, ok := s.(*avro.RefSchema); ok {
		return r.Schema().FullName()
	}
	return string(s.Type())
}

func appendPrimitive(b []byte, t avro.Type, v any, path []string) ([]byte, error) {
	switch t {
	case avro.Boolean:
		x, ok := v.(bool)
		if !ok {
			return b, avroErr(path, "want a boolean")
		}
		if x {
			return append(b, 1), nil
		}
		return append(b, 0), nil
	case avro.Int, avro.Long:
		n, ok := v.(json.Number)
		if !ok {
			return b, avroErr(path, "want an integer (%s)", t)
		}
		i, err := strconv.ParseInt(string(n), 10, 64)
		if err != nil || t == avro.Int && (i < math.MinInt32 || i > math.MaxInt32) {
			return b, avroErr(path, "%s is not an Avro %s", n, t)
		}
		return binary.AppendVarint(b, i), nil
	case avro.Float, avro.Double:
		n, ok := v.(json.Number)
		if !ok {
			return b, avroErr(path, "want a number (%s)", t)
		}
		f, err := strconv.ParseFloat(string(n), 64)
		if err != nil {
			return b, avroErr(path, "%s is not an Avro %s", n, t)
		}
		if t == avro.Float {
			return binary.LittleEndian.AppendUint32(b, math.Float32bits(float32(f))), nil
		}
		return binary.LittleEndian.AppendUint64(b, math.Float64bits(f)), nil
	case avro.String:
		s, ok := v.(string)
		if !ok {
			return b, avroErr(path, "want a string")
		}
		b = binary.AppendVarint(b, int64(len(s)))
		return append(b, s...), nil
	case avro.Bytes:
		raw, ok := codePoints(v)
		if !ok {
			return b, avroErr(path, "want a string of bytes as code points 0-255")
		}
		b = binary.AppendVarint(b, int64(len(raw)))
		return append(b, raw...), nil
	}
	return b, avroErr(path, "unsupported Avro type %s", t)
}

// codePoints turns a JSON string whose code points are 0-255 into those bytes (Avro's JSON encoding of
// bytes and fixed).
func codePoints(v any) ([]byte, bool) {
	s, ok := v.(string)
	if !ok {
		return nil, false
	}
	out := make([]byte, 0, len(s))
	for _, r := range s {
		if r > 255 {
			return nil, false
		}
		out = append(out, byte(r))
	}
	return out, true
}

// defaultJSON turns a field default as hamba/avro holds it into the JSON value appendAvro takes.
func defaultJSON(d any) any {
	switch x := d.(type) {
	case nil, bool, string, map[string]any, []any:
		return x
	case []byte:
		r := make([]rune, len(x))
		for i, c := range x {
			r[i] = rune(c)
		}
		return string(r)
	case int:
		return json.Number(strconv.FormatInt(int64(x), 10))
	case int32:
		return json.Number(strconv.FormatInt(int64(x), 10))
	case int64:
		return json.Number(strconv.FormatInt(x, 10))
	case float32:
		return json.Number(strconv.FormatFloat(float64(x), 'g', -1, 32))
	case float64:
		return json.Number(strconv.FormatFloat(x, 'g', -1, 64))
	}
	return d
}
