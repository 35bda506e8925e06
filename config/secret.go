package config

import "fmt"

// Secret is a string that masks itself whenever it is printed, formatted or
// marshalled. Use Reveal to get the value for the one place that needs it.
type Secret string

const masked = "<secret>"

// Reveal returns the secret's value.
func (s Secret) Reveal() string { return string(s) }

// String returns a mask, never the value.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return masked
}

// GoString returns a mask, so %#v does not leak the value either.
func (s Secret) GoString() string { return fmt.Sprintf("config.Secret(%q)", s.String()) }

// Format masks the value for every fmt verb.
func (s Secret) Format(f fmt.State, verb rune) {
	if verb == 'q' {
		fmt.Fprintf(f, "%q", s.String())
		return
	}
	fmt.Fprint(f, s.String())
}

// MarshalYAML masks the value.
func (s Secret) MarshalYAML() (any, error) { return s.String(), nil }

// MarshalJSON masks the value.
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(fmt.Sprintf("%q", s.String())), nil }

// MarshalText masks the value (zap, encoding/*).
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }
