package payload

import (
	"bytes"
	"math/big"
	"strconv"
	"unicode/utf8"
)

// verdict is the fast check's answer for one value against one schema node. Its order matters: a
// conjunction is the largest verdict of its parts.
type verdict uint8

const (
	vOK     verdict = iota // valid, for sure
	vUnsure                // the fast check cannot tell: ask the library
	vBad                   // invalid, for sure
)

// checkJSON checks one JSON document against a schema node without building it: vOK only when the document
// is well-formed and valid. It allocates only for rare inputs (escaped strings under a string rule, numbers
// equal to a bound in float64, multipleOf on non-integers). Runs on an event loop: CPU only.
func checkJSON(root *node, doc []byte) verdict {
	c := checker{jsonParser: jsonParser{b: doc}}
	c.space()
	v := c.value(root, 0)
	c.space()
	if c.broken || c.i != len(c.b) {
		return vUnsure // not well-formed: the parser says where
	}
	return v
}

type checker struct {
	jsonParser
	broken bool // not well-formed, or deeper than the check goes
}

// value checks the value at c.i against n and moves past it.
func (c *checker) value(n *node, depth int) verdict {
	if depth > maxDepth {
		c.broken = true
		return vUnsure
	}
	start := c.i
	v := c.own(n, depth)
	if c.broken || v == vBad || n.reject {
		return v
	}
	if n.ref == nil && n.allOf == nil && n.anyOf == nil && n.oneOf == nil && n.not == nil {
		return v
	}
	end := c.i
	sub := func(m *node) verdict {
		c.i = start
		return c.value(m, depth+1)
	}
	if n.ref != nil {
		v = max(v, sub(n.ref))
	}
	for _, m := range n.allOf {
		v = max(v, sub(m))
	}
	if len(n.anyOf) > 0 {
		some := vBad
		for _, m := range n.anyOf {
			if some = min(some, sub(m)); some == vOK {
				break
			}
		}
		v = max(v, some)
	}
	if len(n.oneOf) > 0 {
		ok, unsure := 0, false
		for _, m := range n.oneOf {
			switch sub(m) {
			case vOK:
				ok++
			case vUnsure:
				unsure = true
			}
		}
		switch {
		case ok > 1:
			v = vBad
		case unsure:
			v = max(v, vUnsure)
		case ok == 0:
			v = vBad
		}
	}
	if n.not != nil {
		v = max(v, [...]verdict{vOK: vBad, vUnsure: vUnsure, vBad: vOK}[sub(n.not)])
	}
	c.i = end
	if c.broken {
		return vUnsure
	}
	return v
}

// own checks n's own keywords (not its applicators) and moves past the value.
func (c *checker) own(n *node, depth int) verdict {
	if n.opaque || n.reject {
		c.skip(depth)
		if n.reject {
			return vBad
		}
		return vUnsure
	}
	if c.i >= len(c.b) {
		c.broken = true
		return vUnsure
	}
	switch ch := c.b[c.i]; {
	case ch == '{':
		if v := c.typed(n, tObject); v != vOK || n.refOnly || !n.hasObject {
			c.skip(depth)
			return v
		}
		return c.object(n, depth)
	case ch == '[':
		if v := c.typed(n, tArray); v != vOK || n.refOnly {
			c.skip(depth)
			return v
		}
		return c.array(n, depth)
	case ch == '"':
		return c.str(n)
	case ch == '-' || ch >= '0' && ch <= '9':
		return c.number(n)
	case ch == 't' || ch == 'f':
		val := ch == 't'
		if val {
			c.lit("true")
		} else {
			c.lit("false")
		}
		v := c.typed(n, tBool)
		if v == vOK && n.hasEnum {
			v = vBad
			for _, e := range n.enum {
				if e.typ == tBool && e.b == val {
					return vOK
				}
			}
		}
		return v
	case ch == 'n':
		c.lit("null")
		v := c.typed(n, tNull)
		if v == vOK && n.hasEnum {
			v = vBad
			for _, e := range n.enum {
				if e.typ == tNull {
					return vOK
				}
			}
		}
		return v
	}
	c.broken = true
	return vUnsure
}

// typed checks type for a value of type t (not a number: see number).
func (c *checker) typed(n *node, t int) verdict {
	if n.types != 0 && n.types&t == 0 {
		return vBad
	}
	if n.hasEnum && (t == tObject || t == tArray) {
		for _, e := range n.enum {
			if e.typ == 0 {
				return vUnsure // an array or object in the enum: the library compares
			}
		}
		return vBad
	}
	return vOK
}

func (c *checker) lit(s string) {
	if len(c.b)-c.i < len(s) || string(c.b[c.i:c.i+len(s)]) != s {
		c.broken = true
		return
	}
	c.i += len(s)
}

// skip moves past one value, checking only that it is well-formed.
func (c *checker) skip(depth int) {
	if depth > maxDepth || c.i >= len(c.b) {
		c.broken = true
		return
	}
	switch ch := c.b[c.i]; {
	case ch == '{' || ch == '[':
		end := byte('}')
		if ch == '[' {
			end = ']'
		}
		c.i++
		c.space()
		if c.i < len(c.b) && c.b[c.i] == end {
			c.i++
			return
		}
		for !c.broken {
			if end == '}' {
				c.key()
			}
			c.skip(depth + 1)
			if !c.next(end) {
				return
			}
		}
	case ch == '"':
		if _, err := c.strBytes(); err != nil {
			c.broken = true
		}
	case ch == '-' || ch >= '0' && ch <= '9':
		if c.skipNumber() != nil {
			c.broken = true
		}
	case ch == 't':
		c.lit("true")
	case ch == 'f':
		c.lit("false")
	case ch == 'n':
		c.lit("null")
	default:
		c.broken = true
	}
}

// key reads an object key and its colon; the key is borrowed when it has no escape.
func (c *checker) key() []byte {
	c.space()
	if c.i >= len(c.b) || c.b[c.i] != '"' {
		c.broken = true
		return nil
	}
	k, err := c.strBytes()
	if err != nil {
		c.broken = true
		return nil
	}
	c.space()
	if c.i >= len(c.b) || c.b[c.i] != ':' {
		c.broken = true
		return nil
	}
	c.i++
	c.space()
	return k
}

// next moves past the separator after a member: true at ',' (another member follows), false at end or on
// a malformed document.
func (c *checker) next(end byte) bool {
	c.space()
	if c.i >= len(c.b) {
		c.broken = true
		return false
	}
	switch c.b[c.i] {
	case ',':
		c.i++
		c.space()
		return true
	case end:
		c.i++
		return false
	}
	c.broken = true
	return false
}

func (c *checker) object(n *node, depth int) verdict {
	c.i++ // {
	c.space()
	var seen uint64
	v := vOK
	if c.i < len(c.b) && c.b[c.i] == '}' {
		c.i++
	} else {
		for !c.broken {
			k := c.key()
			if c.broken {
				break
			}
			i, known := n.props[string(k)]
			switch {
			case known && seen&(1<<i) != 0:
				v = max(v, vUnsure) // a repeated key: the library sees only the last
				c.skip(depth + 1)
			case known && n.slots[i].n != nil && v != vBad:
				seen |= 1 << i
				v = max(v, c.value(n.slots[i].n, depth+1))
			case known:
				seen |= 1 << i
				c.skip(depth + 1)
			case n.closed:
				v = vBad
				c.skip(depth + 1)
			default:
				c.skip(depth + 1)
			}
			if !c.next('}') {
				break
			}
		}
	}
	if seen&n.required != n.required {
		return vBad
	}
	return v
}

func (c *checker) array(n *node, depth int) verdict {
	c.i++ // [
	c.space()
	v, count := vOK, 0
	if c.i < len(c.b) && c.b[c.i] == ']' {
		c.i++
	} else {
		for !c.broken {
			count++
			if n.items != nil && v != vBad {
				v = max(v, c.value(n.items, depth+1))
			} else {
				c.skip(depth + 1)
			}
			if !c.next(']') {
				break
			}
		}
	}
	if n.minItems >= 0 && count < n.minItems || n.maxItems >= 0 && count > n.maxItems {
		return vBad
	}
	return v
}

func (c *checker) str(n *node) verdict {
	s, err := c.strBytes() // decoded: borrowed, or a copy when it has escapes
	if err != nil {
		c.broken = true
		return vUnsure
	}
	if v := c.typed(n, tString); v != vOK {
		return v
	}
	if n.hasEnum {
		found := false
		for _, e := range n.enum {
			if e.typ == tString && e.s == string(s) {
				found = true
				break
			}
		}
		if !found {
			return vBad
		}
	}
	if n.minLen >= 0 || n.maxLen >= 0 {
		l := utf8.RuneCount(s)
		if n.minLen >= 0 && l < n.minLen || n.maxLen >= 0 && l > n.maxLen {
			return vBad
		}
	}
	if n.pattern != nil && !n.pattern.Match(s) {
		return vBad
	}
	return vOK
}

// number checks a number: its type (integer or number), enum and bounds.
func (c *checker) number(n *node) verdict {
	start := c.i
	if c.skipNumber() != nil {
		c.broken = true
		return vUnsure
	}
	text := c.b[start:c.i]
	isIntText := !bytes.ContainsAny(text, ".eE")
	iv, isInt64 := int64(0), false
	if isIntText {
		iv, isInt64 = parseIntText(text)
	}
	if n.types != 0 && n.types&tNumber == 0 {
		switch {
		case n.types&tInteger == 0:
			return vBad
		case !isIntText:
			return vUnsure // 1.0 and 1e2 are integers too: the library decides
		}
	}
	if !n.hasEnum && n.min == nil && n.max == nil && n.xmin == nil && n.xmax == nil && n.mult == nil {
		return vOK
	}
	num := numVal{text: text, i: iv, isInt: isInt64}
	var err error
	if num.f, err = strconv.ParseFloat(string(text), 64); err != nil {
		return vUnsure // beyond float64 (and maybe beyond math/big): the library decides
	}
	if n.hasEnum {
		found := false
		for _, e := range n.enum {
			if e.typ != tNumber {
				continue
			}
			d, ok := num.cmp(e.num)
			if !ok {
				return vUnsure
			}
			if d == 0 {
				found = true
				break
			}
		}
		if !found {
			return vBad
		}
	}
	for _, b := range [...]struct {
		b        *bound
		ok1, ok2 int // the comparisons that pass
	}{{n.min, 0, 1}, {n.max, -1, 0}, {n.xmin, 1, 1}, {n.xmax, -1, -1}} {
		if b.b == nil {
			continue
		}
		d, ok := num.cmp(b.b)
		if !ok {
			return vUnsure
		}
		if d != b.ok1 && d != b.ok2 {
			return vBad
		}
	}
	if n.mult != nil {
		if num.isInt && n.mult.isInt {
			if num.i%n.mult.i != 0 {
				return vBad
			}
			return vOK
		}
		r := num.rat()
		if r == nil {
			return vUnsure
		}
		if !r.Quo(r, n.mult.r).IsInt() {
			return vBad
		}
	}
	return vOK
}

// numVal is a number of the document.
type numVal struct {
	text  []byte
	f     float64 // correctly rounded
	i     int64
	isInt bool // i holds it exactly
}

// cmp compares the number with a bound exactly: as integers when both are, else in float64 when that
// decides (rounding to nearest is monotonic, so different floats order as the numbers do), else as rationals.
// It fails (false) only for a number math/big cannot read (an exponent past a million).
func (x numVal) cmp(b *bound) (int, bool) {
	switch {
	case x.isInt && b.isInt:
		return cmpOrdered(x.i, b.i), true
	case x.f != b.f:
		return cmpOrdered(x.f, b.f), true
	}
	r := x.rat()
	if r == nil {
		return 0, false
	}
	return r.Cmp(b.r), true
}

// rat is the number's exact value, or nil if math/big cannot read it.
func (x numVal) rat() *big.Rat {
	r, ok := new(big.Rat).SetString(string(x.text))
	if !ok {
		return nil
	}
	return r
}

func cmpOrdered[T int64 | float64](a, b T) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
