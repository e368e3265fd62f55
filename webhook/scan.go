package webhook

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/bits"
	"strconv"
	"strings"
	"unicode/utf8"
)

// scanner reads one JSON document in a single pass: it checks the syntax of
// every byte, as json.Valid does, while the event decoders (events.go) take
// out the few fields the trigger decision needs and skip the rest. It
// replaces json.Valid followed by json.Unmarshal, which read a 16 KB
// delivery twice and were most of intake's CPU.
//
// It accepts and refuses exactly what json.Unmarshal into the event structs
// does (FuzzScanMatchesUnmarshal holds it to that): the same grammar and
// nesting limit, keys matched exactly or else case-insensitively, the last
// of duplicate keys winning, null leaving a field as it was (and clearing a
// pointer or slice), and a value of the wrong type for a decoded field
// refusing the whole payload.
type scanner struct {
	data  []byte
	pos   int
	depth int
}

// maxDepth is encoding/json's nesting limit.
const maxDepth = 10000

// errSyntax and the type errors are wrapped into ErrMalformed by the
// caller. A value of the wrong type is refused at once, without checking the
// rest of the payload: json.Unmarshal refuses it too, whatever follows.
var errSyntax = errors.New("invalid JSON")

func (s *scanner) syntaxErr() error {
	return fmt.Errorf("%w at offset %d", errSyntax, s.pos)
}

func (s *scanner) typeErr(want string) error {
	return fmt.Errorf("value at offset %d is not %s", s.pos, want)
}

// valid reports whether data is one JSON value, as json.Valid does.
func valid(data []byte) bool {
	s := scanner{data: data}
	return s.skip() == nil && s.end() == nil
}

// decodeObject decodes a whole payload whose top level is an object (or
// null), calling field for each key.
func decodeObject(data []byte, names []string, field func(s *scanner, key []byte) error) error {
	s := scanner{data: data}
	if err := s.object(names, field); err != nil {
		return err
	}
	return s.end()
}

// end checks that nothing but whitespace follows the value.
func (s *scanner) end() error {
	s.space()
	if s.pos != len(s.data) {
		return s.syntaxErr()
	}
	return nil
}

func (s *scanner) space() {
	const spaces = 0x2020202020202020
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ':
			// Indentation of pretty-printed payloads: eight at a time.
			if s.pos+8 <= len(s.data) {
				if x := binary.LittleEndian.Uint64(s.data[s.pos:]) ^ spaces; x != 0 {
					s.pos += bits.TrailingZeros64(x) / 8
				} else {
					s.pos += 8
				}
				continue
			}
			s.pos++
		case '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

// peek returns the first byte of the next value (0 at the end).
func (s *scanner) peek() byte {
	s.space()
	if s.pos == len(s.data) {
		return 0
	}
	return s.data[s.pos]
}

// null consumes a null and reports whether there was one.
func (s *scanner) null() (bool, error) {
	if s.peek() != 'n' {
		return false, nil
	}
	return true, s.literal("null")
}

func (s *scanner) literal(word string) error {
	if !bytes.HasPrefix(s.data[s.pos:], []byte(word)) {
		return s.syntaxErr()
	}
	s.pos += len(word)
	return nil
}

func (s *scanner) push() error {
	s.depth++
	if s.depth > maxDepth {
		return s.syntaxErr()
	}
	s.pos++
	return nil
}

// object reads an object (null is an empty one), calling field with the
// scanner at each value; field must consume it. A key that matches none of
// names exactly is matched case-insensitively against them, as
// json.Unmarshal matches struct fields.
func (s *scanner) object(names []string, field func(s *scanner, key []byte) error) error {
	switch s.peek() {
	case '{':
	case 'n':
		return s.literal("null")
	default:
		return s.typeErr("an object")
	}
	if err := s.push(); err != nil {
		return err
	}
	if s.peek() == '}' {
		s.pos++
		s.depth--
		return nil
	}
	for {
		key, err := s.key()
		if err != nil {
			return err
		}
		if err := field(s, foldKey(key, names)); err != nil {
			return err
		}
		switch s.peek() {
		case ',':
			s.pos++
		case '}':
			s.pos++
			s.depth--
			return nil
		default:
			return s.syntaxErr()
		}
	}
}

// key reads `"name":`, unescaping the name only if it has escapes. The
// result aliases the payload: decoders compare it, never keep it.
func (s *scanner) key() ([]byte, error) {
	if s.peek() != '"' {
		return nil, s.syntaxErr()
	}
	raw, escaped, err := s.rawString()
	if err != nil {
		return nil, err
	}
	key := raw[1 : len(raw)-1]
	if escaped {
		k, err := unquote(raw)
		if err != nil {
			return nil, err
		}
		key = []byte(k)
	}
	if s.peek() != ':' {
		return nil, s.syntaxErr()
	}
	s.pos++
	return key, nil
}

// foldKey returns the name key stands for: itself when it is one of names
// or cannot fold to one (GitHub's keys are lower-case ASCII, so the fold is
// looked for only when key has another letter), else the name it equals
// case-insensitively.
func foldKey(key []byte, names []string) []byte {
	if len(names) == 0 {
		return key
	}
	fold := false
	for i := 0; i < len(key); i++ {
		if c := key[i]; ('A' <= c && c <= 'Z') || c >= utf8.RuneSelf {
			fold = true
			break
		}
	}
	if !fold {
		return key
	}
	for _, n := range names {
		if n == string(key) {
			return key
		}
	}
	for _, n := range names {
		if bytes.EqualFold(key, []byte(n)) {
			return []byte(n)
		}
	}
	return key
}

// array reads an array (null is handled by the caller), calling elem with
// the scanner at each element and its index.
func (s *scanner) array(elem func(s *scanner, i int) error) error {
	if s.peek() != '[' {
		return s.typeErr("an array")
	}
	if err := s.push(); err != nil {
		return err
	}
	if s.peek() == ']' {
		s.pos++
		s.depth--
		return nil
	}
	for i := 0; ; i++ {
		if err := elem(s, i); err != nil {
			return err
		}
		switch s.peek() {
		case ',':
			s.pos++
		case ']':
			s.pos++
			s.depth--
			return nil
		default:
			return s.syntaxErr()
		}
	}
}

// str decodes a string into dst; null leaves dst as it was.
func (s *scanner) str(dst *string) error {
	switch s.peek() {
	case '"':
	case 'n':
		return s.literal("null")
	default:
		return s.typeErr("a string")
	}
	raw, escaped, err := s.rawString()
	if err != nil {
		return err
	}
	body := raw[1 : len(raw)-1]
	if !escaped && utf8.Valid(body) {
		*dst = string(body)
		return nil
	}
	v, err := unquote(raw)
	if err != nil {
		return err
	}
	*dst = v
	return nil
}

// unquote decodes a string token that has escapes or invalid UTF-8 exactly
// as encoding/json does.
// Comment and issue bodies carry \n escapes, so the short escapes in valid
// UTF-8 are decoded here; \u escapes (surrogate pairs, lone surrogates) and
// invalid bytes (U+FFFD) are left to encoding/json itself.
func unquote(raw []byte) (string, error) {
	body := raw[1 : len(raw)-1]
	if !utf8.Valid(body) || bytes.Contains(body, []byte(`\u`)) {
		var v string
		if err := json.Unmarshal(raw, &v); err != nil {
			return "", fmt.Errorf("decode string: %w", err)
		}
		return v, nil
	}
	var b strings.Builder
	b.Grow(len(body))
	for i := 0; i < len(body); i++ {
		c := body[i]
		if c == '\\' {
			i++
			c = shortEscapes[body[i]]
		}
		b.WriteByte(c)
	}
	return b.String(), nil
}

// shortEscapes maps the byte after a backslash to what it stands for.
var shortEscapes = [256]byte{'"': '"', '\\': '\\', '/': '/', 'b': '\b', 'f': '\f', 'n': '\n', 'r': '\r', 't': '\t'}

// integer decodes a number into dst as json.Unmarshal decodes into an
// integer of bits bits: digits only (no fraction or exponent), in range;
// null leaves dst as it was.
func (s *scanner) integer(dst *int64, bits int) error {
	switch c := s.peek(); {
	case c == 'n':
		return s.literal("null")
	case c != '-' && (c < '0' || c > '9'):
		return s.typeErr("a number")
	}
	start := s.pos
	if err := s.number(); err != nil {
		return err
	}
	n, err := strconv.ParseInt(string(s.data[start:s.pos]), 10, bits)
	if err != nil {
		s.pos = start
		return s.typeErr("an integer")
	}
	*dst = n
	return nil
}

// rawString consumes a string token and returns it with its quotes, and
// whether it has escapes.
func (s *scanner) rawString() ([]byte, bool, error) {
	start := s.pos
	s.pos++ // the opening quote
	escaped := false
	for {
		s.plainRun()
		if s.pos == len(s.data) {
			return nil, false, s.syntaxErr()
		}
		switch c := s.data[s.pos]; {
		case c == '"':
			s.pos++
			return s.data[start:s.pos], escaped, nil
		case c == '\\':
			escaped = true
			if err := s.escape(); err != nil {
				return nil, false, err
			}
		default: // a control character
			return nil, false, s.syntaxErr()
		}
	}
}

// plainRun advances over bytes a string holds as they are, eight at a time
// while no byte of the eight is special (most of a delivery is URLs).
func (s *scanner) plainRun() {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	for s.pos+8 <= len(s.data) {
		w := binary.LittleEndian.Uint64(s.data[s.pos:])
		quote, backslash := w^(ones*'"'), w^(ones*'\\')
		// A byte is zero in quote or backslash, or below 0x20 in w, exactly
		// when its high bit is set here (the classic has-zero-byte test).
		special := ((quote - ones) & ^quote) | ((backslash - ones) & ^backslash) | ((w - ones*0x20) & ^w)
		if special&highs != 0 {
			break
		}
		s.pos += 8
	}
	for s.pos < len(s.data) && plain[s.data[s.pos]] {
		s.pos++
	}
}

// plain marks the bytes a string holds as they are: not a quote, a
// backslash or a control character.
var plain = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

func (s *scanner) escape() error {
	s.pos++ // the backslash
	if s.pos == len(s.data) {
		return s.syntaxErr()
	}
	switch s.data[s.pos] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		s.pos++
		return nil
	case 'u':
		s.pos++
		for range 4 {
			if s.pos == len(s.data) || !isHex(s.data[s.pos]) {
				return s.syntaxErr()
			}
			s.pos++
		}
		return nil
	}
	return s.syntaxErr()
}

func isHex(c byte) bool {
	return ('0' <= c && c <= '9') || ('a' <= c && c <= 'f') || ('A' <= c && c <= 'F')
}

// number consumes -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?.
func (s *scanner) number() error {
	if s.pos < len(s.data) && s.data[s.pos] == '-' {
		s.pos++
	}
	switch {
	case s.pos < len(s.data) && s.data[s.pos] == '0':
		s.pos++
	case s.digits() == 0:
		return s.syntaxErr()
	}
	if s.pos < len(s.data) && s.data[s.pos] == '.' {
		s.pos++
		if s.digits() == 0 {
			return s.syntaxErr()
		}
	}
	if s.pos < len(s.data) && (s.data[s.pos] == 'e' || s.data[s.pos] == 'E') {
		s.pos++
		if s.pos < len(s.data) && (s.data[s.pos] == '+' || s.data[s.pos] == '-') {
			s.pos++
		}
		if s.digits() == 0 {
			return s.syntaxErr()
		}
	}
	return nil
}

func (s *scanner) digits() int {
	start := s.pos
	for s.pos < len(s.data) && '0' <= s.data[s.pos] && s.data[s.pos] <= '9' {
		s.pos++
	}
	return s.pos - start
}

// skip consumes one value of any kind, checking its syntax.
func (s *scanner) skip() error {
	switch c := s.peek(); c {
	case '{':
		return s.object(nil, func(s *scanner, _ []byte) error { return s.skip() })
	case '[':
		return s.array(func(s *scanner, _ int) error { return s.skip() })
	case '"':
		_, _, err := s.rawString()
		return err
	case 't':
		return s.literal("true")
	case 'f':
		return s.literal("false")
	case 'n':
		return s.literal("null")
	default:
		if c == '-' || ('0' <= c && c <= '9') {
			return s.number()
		}
		return s.syntaxErr()
	}
}
