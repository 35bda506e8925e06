package config

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// ParsePortion parses a share of a lifetime ("25%", "12.5%") or a Go duration
// string ("30m", "4m30s"). It does not range-check the result; Validate does.
func ParsePortion(s string) (Portion, error) {
	s = strings.TrimSpace(s)
	if pct, ok := strings.CutSuffix(s, "%"); ok {
		f, err := strconv.ParseFloat(strings.TrimSpace(pct), 64)
		if err != nil {
			return Portion{}, fmt.Errorf("invalid percentage %q: want a number followed by %%, e.g. \"25%%\"", s)
		}
		return Portion{Fraction: f / 100}, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return Portion{}, fmt.Errorf("invalid portion %q: want a percentage (\"25%%\") or a duration (\"30m\")", s)
	}
	return Portion{Duration: d}, nil
}

// String formats the portion the way it is written in the config file.
func (p Portion) String() string {
	if p.Duration != 0 {
		return p.Duration.String()
	}
	return strconv.FormatFloat(p.Fraction*100, 'f', -1, 64) + "%"
}

// IsZero reports whether neither a fraction nor a duration is set.
func (p Portion) IsZero() bool { return p.Fraction == 0 && p.Duration == 0 }

// UnmarshalYAML decodes "25%" or a duration string. Errors are reported as
// *yaml.TypeError so that decoding goes on and every problem is listed.
func (p *Portion) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: want a percentage (\"25%%\") or a duration (\"30m\")", n.Line)}}
	}
	v, err := ParsePortion(n.Value)
	if err != nil {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %v", n.Line, err)}}
	}
	*p = v
	return nil
}

// MarshalYAML writes the portion as it is written in the config file.
func (p Portion) MarshalYAML() (any, error) { return p.String(), nil }

// MarshalJSON writes the portion as a JSON string ("25%" or "30m0s").
func (p Portion) MarshalJSON() ([]byte, error) { return json.Marshal(p.String()) }

// UnmarshalJSON reads what MarshalJSON writes.
func (p *Portion) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("config: portion: %w", err)
	}
	v, err := ParsePortion(s)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	*p = v
	return nil
}
