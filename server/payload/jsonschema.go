package payload

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

// A JSON Schema rule checks a payload twice over, fast then right:
//
//   - The fast check (check.go) walks the payload's bytes once against a compiled form of the schema (node)
//     and allocates nothing for ordinary documents. It answers "valid" only when it is sure; anything it
//     does not handle (a keyword it does not know, an escaped string under a string rule, a number equal to
//     a bound in float64, a repeated key) makes it answer "unsure".
//   - Anything but "valid" goes to the library validator (santhosh-tekuri/jsonschema), which decides and
//     names the first failing path. So the library stays the definition of what is valid, and refused or
//     unusual payloads cost what they cost before; ordinary valid payloads cost a byte walk.
//
// The node tree is built from the library's compiled *jsonschema.Schema, not from the schema's text, so the
// drafts, $ref resolution and the keywords' defaults (which drafts assert "format", how draft 4's boolean
// exclusiveMinimum reads) are the library's.
type jsonSchemaCodec struct {
	s    *jsonschema.Schema
	root *node
}

// schemaURL is where the schema is said to be: a hierarchical URL, so that a $ref relative to it (a registry
// reference's name) resolves. Nothing is fetched from it.
const schemaURL = "https://ferry.invalid/schema.json"

func newJSONSchema(text string, refs []ref) (*jsonSchemaCodec, error) {
	doc, err := jsonschema.UnmarshalJSON(strings.NewReader(text))
	if err != nil {
		return nil, fmt.Errorf("cannot parse JSON Schema: %w", err)
	}
	c := jsonschema.NewCompiler()
	// Nothing is loaded from elsewhere: the library's default loader reads file:// URLs from the local disk, so
	// a schema from the registry could make Ferry read any local file. References resolve only to the schema
	// itself and to the registry references added below.
	c.UseLoader(jsonschema.SchemeURLLoader{})
	if err := c.AddResource(schemaURL, doc); err != nil {
		return nil, fmt.Errorf("cannot load JSON Schema: %w", err)
	}
	base, _ := url.Parse(schemaURL)
	if m, ok := doc.(map[string]any); ok { // a schema with its own $id: references resolve against that
		if id, ok := m["$id"].(string); ok {
			if u, err := base.Parse(id); err == nil {
				base = u
			}
		}
	}
	for _, r := range refs {
		rdoc, err := jsonschema.UnmarshalJSON(strings.NewReader(r.text))
		if err != nil {
			return nil, fmt.Errorf("cannot parse referenced JSON Schema %s: %w", r.name, err)
		}
		u, err := base.Parse(r.name)
		if err != nil {
			return nil, fmt.Errorf("referenced JSON Schema %s: %w", r.name, err)
		}
		if err := c.AddResource(u.String(), rdoc); err != nil {
			return nil, fmt.Errorf("cannot load referenced JSON Schema %s: %w", r.name, err)
		}
	}
	s, err := c.Compile(schemaURL)
	if err != nil {
		return nil, fmt.Errorf("cannot compile JSON Schema: %w", err)
	}
	return &jsonSchemaCodec{s: s, root: compileNode(s, map[*jsonschema.Schema]*node{})}, nil
}

var printer = message.NewPrinter(language.English)

func (j *jsonSchemaCodec) ingest(dst, payload []byte) ([]byte, error) {
	if at := hugeExponent(payload); at >= 0 {
		// The library checks numeric keywords with math/big: 1e999999 costs it tens of milliseconds of the event
		// loop per message. No device means such a number (float64 ends at 1e308), so every JSON Schema rule
		// refuses it, whatever its keywords.
		return dst, &Invalid{Reason: ReasonSchema, Err: fmt.Errorf("number at byte %d has an exponent beyond ±%d", at, maxExponent)}
	}
	if checkJSON(j.root, payload) == vOK {
		return append(dst, payload...), nil
	}
	return j.slowIngest(dst, payload)
}

// slowIngest decides with the library validator, and says why a payload is refused.
func (j *jsonSchemaCodec) slowIngest(dst, payload []byte) ([]byte, error) {
	v, err := parseJSON(payload) // the values jsonschema.UnmarshalJSON gives, for less
	if err != nil {
		return dst, &Invalid{Reason: ReasonNotJSON, Err: err}
	}
	if err := j.validate(v); err != nil {
		var ve *jsonschema.ValidationError
		if errors.As(err, &ve) {
			for len(ve.Causes) > 0 {
				ve = ve.Causes[0] // the first leaf: one error, where it is
			}
			err = fmt.Errorf("at '/%s': %s", strings.Join(ve.InstanceLocation, "/"), ve.ErrorKind.LocalizedString(printer))
		}
		return dst, &Invalid{Reason: ReasonSchema, Err: err}
	}
	return append(dst, payload...), nil
}

// validate runs the library validator. It recovers from a panic of the library: it dereferences a nil
// *big.Rat for a number math/big cannot read (an exponent past a million, such as 1E2000000, under a
// numeric keyword), which would otherwise take the event loop down; such a document is refused.
func (j *jsonSchemaCodec) validate(v any) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("the validator cannot check this document (a number beyond its range?): %s", fmt.Sprint(p))
		}
	}()
	return j.s.Validate(v)
}

func (j *jsonSchemaCodec) toJSON(body []byte, _ []int) ([]byte, error) { return body, nil }

// JSON value types, as bits of node.types.
const (
	tNull = 1 << iota
	tBool
	tNumber
	tInteger
	tString
	tArray
	tObject
)

// node is the compiled form of one schema (object or boolean) for the fast check.
type node struct {
	opaque bool // uses a keyword the fast check does not handle: always unsure
	reject bool // the false schema
	types  int  // allowed types; 0 = any

	enum    []enumVal // const is a one-value enum
	hasEnum bool

	// applicators, each checked on the same value
	ref                 *node
	allOf, anyOf, oneOf []*node
	not                 *node
	refOnly             bool // drafts before 2019-09: $ref's siblings past type, enum and const are ignored

	// object
	props     map[string]int // property or required name → slot
	slots     []slot
	required  uint64 // slot bits that must be present
	closed    bool   // additionalProperties: false
	hasObject bool   // any object keyword

	// array
	items              *node
	minItems, maxItems int // -1 = none

	// string
	minLen, maxLen int // -1 = none
	pattern        *regexp.Regexp

	// number
	min, max, xmin, xmax, mult *bound
}

// slot is a property named by properties or required.
type slot struct {
	n *node // its schema; nil = any
}

// bound is a number of the schema in the forms the fast check compares with.
type bound struct {
	r     *big.Rat
	f     float64
	i     int64
	isInt bool // r is an integer that fits in i
}

func newBound(r *big.Rat) *bound {
	if r == nil {
		return nil
	}
	b := &bound{r: r}
	b.f, _ = r.Float64()
	if r.IsInt() && r.Num().IsInt64() {
		b.isInt, b.i = true, r.Num().Int64()
	}
	return b
}

// enumVal is one value of enum or const.
type enumVal struct {
	typ int    // tNull, tBool, tNumber, tString; 0 = an array or object (the fast check does not compare those)
	s   string // the string
	b   bool   // the boolean
	num *bound // the number
}

// compileNode builds the node of s, sharing nodes through seen (so $ref cycles close).
func compileNode(s *jsonschema.Schema, seen map[*jsonschema.Schema]*node) *node {
	if n := seen[s]; n != nil {
		return n
	}
	n := &node{minItems: -1, maxItems: -1, minLen: -1, maxLen: -1}
	seen[s] = n
	if s.Bool != nil {
		n.reject = !*s.Bool
		return n
	}
	if s.RecursiveRef != nil || s.DynamicRef != nil || s.Format != nil || s.If != nil || s.PropertyNames != nil ||
		len(s.PatternProperties) > 0 || len(s.Dependencies) > 0 || len(s.DependentRequired) > 0 ||
		len(s.DependentSchemas) > 0 || s.UnevaluatedProperties != nil || s.MinProperties != nil ||
		s.MaxProperties != nil || s.Contains != nil || s.UniqueItems || s.AdditionalItems != nil ||
		len(s.PrefixItems) > 0 || s.UnevaluatedItems != nil || s.ContentEncoding != nil ||
		s.ContentMediaType != nil || s.ContentSchema != nil || len(s.Extensions) > 0 {
		n.opaque = true
		return n
	}
	if s.Types != nil {
		for _, t := range s.Types.ToStrings() {
			n.types |= map[string]int{"null": tNull, "boolean": tBool, "number": tNumber, "integer": tInteger,
				"string": tString, "array": tArray, "object": tObject}[t]
		}
	}
	if s.Const != nil {
		n.hasEnum, n.enum = true, []enumVal{newEnumVal(*s.Const)}
	}
	if s.Enum != nil {
		if n.hasEnum { // both: the fast check does not intersect them
			n.opaque = true
			return n
		}
		n.hasEnum = true
		for _, v := range s.Enum.Values {
			n.enum = append(n.enum, newEnumVal(v))
		}
	}
	if s.Ref != nil {
		n.ref = compileNode(s.Ref, seen)
		if s.DraftVersion < 2019 {
			n.refOnly = true
			return n
		}
	}
	for _, l := range []struct {
		from []*jsonschema.Schema
		to   *[]*node
	}{{s.AllOf, &n.allOf}, {s.AnyOf, &n.anyOf}, {s.OneOf, &n.oneOf}} {
		for _, sub := range l.from {
			*l.to = append(*l.to, compileNode(sub, seen))
		}
	}
	if s.Not != nil {
		n.not = compileNode(s.Not, seen)
	}
	if !n.compileObject(s, seen) || !n.compileArray(s, seen) || !n.compileString(s) {
		n.opaque = true
		return n
	}
	n.min, n.max, n.xmin, n.xmax = newBound(s.Minimum), newBound(s.Maximum), newBound(s.ExclusiveMinimum), newBound(s.ExclusiveMaximum)
	if n.mult = newBound(s.MultipleOf); n.mult != nil && n.mult.r.Sign() <= 0 {
		n.opaque = true
	}
	return n
}

func (n *node) compileObject(s *jsonschema.Schema, seen map[*jsonschema.Schema]*node) bool {
	switch a := s.AdditionalProperties.(type) {
	case nil:
	case bool:
		n.closed = !a
	default:
		return false // a schema for the other properties: not handled
	}
	n.props = map[string]int{}
	add := func(name string) int {
		i, ok := n.props[name]
		if !ok {
			i = len(n.slots)
			n.props[name] = i
			n.slots = append(n.slots, slot{})
		}
		return i
	}
	for name, sub := range s.Properties {
		n.slots[add(name)].n = compileNode(sub, seen)
	}
	for _, name := range s.Required {
		if i := add(name); i < 64 {
			n.required |= 1 << i
		}
	}
	n.hasObject = n.closed || len(n.slots) > 0
	return len(n.slots) <= 64 // a bit per slot tells repeated keys and missing required ones
}

func (n *node) compileArray(s *jsonschema.Schema, seen map[*jsonschema.Schema]*node) bool {
	items := s.Items2020
	switch it := s.Items.(type) {
	case nil:
	case *jsonschema.Schema:
		items = it
	default:
		return false // draft 2019-09 and earlier tuple form
	}
	if items != nil {
		n.items = compileNode(items, seen)
	}
	if s.MinItems != nil {
		n.minItems = *s.MinItems
	}
	if s.MaxItems != nil {
		n.maxItems = *s.MaxItems
	}
	return true
}

func (n *node) compileString(s *jsonschema.Schema) bool {
	if s.MinLength != nil {
		n.minLen = *s.MinLength
	}
	if s.MaxLength != nil {
		n.maxLen = *s.MaxLength
	}
	if s.Pattern != nil {
		re, ok := s.Pattern.(*regexp.Regexp) // the library's default engine: Go's regexp
		if !ok {
			return false
		}
		n.pattern = re
	}
	return true
}

func newEnumVal(v any) enumVal {
	switch v := v.(type) {
	case nil:
		return enumVal{typ: tNull}
	case bool:
		return enumVal{typ: tBool, b: v}
	case string:
		return enumVal{typ: tString, s: v}
	case json.Number:
		if r, ok := new(big.Rat).SetString(string(v)); ok {
			return enumVal{typ: tNumber, num: newBound(r)}
		}
	case float64:
		if r := new(big.Rat).SetFloat64(v); r != nil {
			return enumVal{typ: tNumber, num: newBound(r)}
		}
	}
	return enumVal{} // compared by the library
}

// parseIntText returns the value of an integer's text (no fraction, no exponent) if it fits an int64.
func parseIntText(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 19 {
		return 0, false
	}
	v, err := strconv.ParseInt(string(b), 10, 64)
	return v, err == nil
}

// maxExponent bounds the exponent of a number a JSON Schema rule accepts: far beyond float64's (±308), and
// cheap for math/big.
const maxExponent = 4096

// hugeExponent returns the offset of the first number in doc whose exponent is beyond ±maxExponent, or -1.
// Strings are skipped. It allocates nothing; a document that is not JSON is refused later by the parser.
func hugeExponent(doc []byte) int {
	inStr, num := false, -1 // num: where the number being read began
	for i := 0; i < len(doc); i++ {
		c := doc[i]
		switch {
		case inStr:
			if c == '\\' {
				i++
			} else if c == '"' {
				inStr = false
			}
		case c == '"':
			inStr, num = true, -1
		case c == '-' || c >= '0' && c <= '9':
			if num < 0 {
				num = i
			}
		case (c == 'e' || c == 'E') && num >= 0:
			j := i + 1
			if j < len(doc) && (doc[j] == '+' || doc[j] == '-') {
				j++
			}
			exp := 0
			for ; j < len(doc) && doc[j] >= '0' && doc[j] <= '9'; j++ {
				if exp <= maxExponent {
					exp = exp*10 + int(doc[j]-'0')
				}
			}
			if exp > maxExponent {
				return num
			}
			i = j - 1
		case c == '.':
		default:
			num = -1
		}
	}
	return -1
}
