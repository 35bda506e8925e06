package config

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"reflect"
	"sort"
	"strconv"
)

// Hash identifies the effective configuration: the one in use after
// defaults, file secrets and command-line overrides. Replicas that run the
// same configuration report the same hash (wxbroker_config_hash), and any
// change of an exported key, a secret included, changes it. A secret enters
// only as its SHA-256, never as itself, so neither the hash nor the encoding
// it is taken of reveals one. It is the first 48 bits of the SHA-256 of
// that canonical encoding (every exported field by name, map keys sorted):
// an integer a float64 gauge holds exactly.
func (c *Config) Hash() uint64 {
	sum := sha256.Sum256(c.canonical())
	return binary.BigEndian.Uint64(sum[:8]) >> 16
}

// canonical encodes c for Hash: deterministic, secrets as digests.
func (c *Config) canonical() []byte {
	var b bytes.Buffer
	encodeCanonical(&b, reflect.ValueOf(c).Elem())
	return b.Bytes()
}

func encodeCanonical(b *bytes.Buffer, v reflect.Value) {
	if v.Type() == secretType {
		sum := sha256.Sum256([]byte(v.String()))
		b.WriteString(`secret:`)
		b.WriteString(hex.EncodeToString(sum[:]))
		return
	}
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			b.WriteString("null")
			return
		}
		encodeCanonical(b, v.Elem())
	case reflect.Struct:
		t := v.Type()
		b.WriteByte('{')
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() {
				continue // compiled forms (Client.access) and bookkeeping
			}
			b.WriteString(f.Name)
			b.WriteByte(':')
			encodeCanonical(b, v.Field(i))
			b.WriteByte(',')
		}
		b.WriteByte('}')
	case reflect.Map:
		if v.IsNil() {
			b.WriteString("null")
			return
		}
		keys := v.MapKeys()
		sort.Slice(keys, func(i, j int) bool { return fmt.Sprint(keys[i]) < fmt.Sprint(keys[j]) })
		b.WriteByte('{')
		for _, k := range keys {
			encodeCanonical(b, k)
			b.WriteByte(':')
			encodeCanonical(b, v.MapIndex(k))
			b.WriteByte(',')
		}
		b.WriteByte('}')
	case reflect.Slice, reflect.Array:
		if v.Kind() == reflect.Slice && v.IsNil() {
			b.WriteString("null")
			return
		}
		b.WriteByte('[')
		for i := range v.Len() {
			encodeCanonical(b, v.Index(i))
			b.WriteByte(',')
		}
		b.WriteByte(']')
	case reflect.String:
		b.WriteString(strconv.Quote(v.String()))
	case reflect.Bool:
		b.WriteString(strconv.FormatBool(v.Bool()))
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		b.WriteString(strconv.FormatInt(v.Int(), 10))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		b.WriteString(strconv.FormatUint(v.Uint(), 10))
	case reflect.Float32, reflect.Float64:
		b.WriteString(strconv.FormatFloat(v.Float(), 'g', -1, 64))
	default:
		// Functions and channels are no configuration.
		b.WriteString("?")
	}
}
