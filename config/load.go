package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Default returns a Config holding every default and no
// namespaces, clients or login flows. Load decodes the file over it, so a key
// that is absent from the file keeps its default, while a key that is present
// (even with a zero value) is taken as written and validated.
func Default() *Config {
	secure := true
	return &Config{
		Listen: "127.0.0.1:8080",
		Log:    Log{Level: "info", Format: "json"},
		Redis:  Redis{KeyPrefix: "wxbroker"},
		Leader: Leader{LockTTL: 15 * time.Second, RenewInterval: 5 * time.Second},
		WeChat: WeChat{
			BaseURL:      "https://api.weixin.qq.com",
			FallbackURLs: []string{"https://api2.weixin.qq.com"},
			Timeout:      5 * time.Second,
		},
		Refresh: Refresh{
			BeforeExpiry:         Portion{Fraction: 0.25},
			Jitter:               Portion{Fraction: 0.10},
			Concurrency:          32,
			ForceMinInterval:     30 * time.Second,
			ForceDailyCap:        20,
			StableRotationWindow: 5 * time.Minute,
		},
		Gateway: DefaultGateway(),
		Login: Login{
			JWT: JWT{Issuer: "wxbroker", AccessTTL: 2 * time.Hour, RefreshTTL: 720 * time.Hour,
				RefreshReuseWindow: DefaultRefreshReuseWindow, AccessRefreshLeeway: DefaultAccessRefreshLeeway},
			Web:       WebLogin{QRConnectURL: "https://open.weixin.qq.com/connect/qrconnect", CookieSecure: &secure},
			RateLimit: LoginRateLimit{PerMinute: DefaultLoginPerMinute, Burst: DefaultLoginBurst},
		},
	}
}

// ApplyDefaults fills the defaults that Default cannot pre-fill: the instance
// ID (hostname-pid), each app's token_mode (stable) and login.web.cookie_secure
// (true) when unset. Load calls it; code that builds a Config by hand (dev
// mode) may call it before Validate.
func (c *Config) ApplyDefaults() {
	if c.InstanceID == "" {
		host, err := os.Hostname()
		if err != nil || host == "" {
			host = "wxbroker"
		}
		c.InstanceID = host + "-" + strconv.Itoa(os.Getpid())
	}
	for _, ns := range c.Namespaces {
		if ns == nil {
			continue
		}
		for _, a := range ns.Apps {
			if a != nil && a.TokenMode == "" {
				a.TokenMode = ModeStable
			}
		}
	}
	if c.Login.Web.CookieSecure == nil {
		secure := true
		c.Login.Web.CookieSecure = &secure
	}
}

// Load reads, decodes and validates the YAML file at path:
//
//   - ${VAR} in any value is replaced by the environment variable VAR (unset:
//     empty, as in the shell), ${VAR:?} makes an unset VAR an error,
//     ${VAR:-default} falls back to default when VAR is unset or empty,
//     and $$ stands for a literal $ (so a secret "pa$${x}" reads
//     "pa${x}"); a $ followed by anything else is kept as it is;
//   - every secret may instead come from a file (redis.password_file,
//     namespaces.*.apps[].secret_file, the component_secret_file,
//     token_file and encoding_aes_key_file of namespaces.*.components[],
//     open_platform.refresh_token_encryption_key_file,
//     login.jwt.signing_key_file, login.session_key_encryption_key_file),
//     whose content is trimmed;
//     setting both the value and the file is an error; relative *_file and
//     tls paths are resolved against the configuration file's directory;
//   - absent keys take their defaults (see Default and ApplyDefaults);
//   - unknown keys are errors naming the key and its line.
//
// Every problem found while decoding or validating is returned at once: the
// error wraps a *ValidationError.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := parse(data, filepath.Dir(path), os.LookupEnv)
	if err != nil {
		return nil, fmt.Errorf("config: %s: %w", path, err)
	}
	return c, nil
}

// parse decodes and validates a configuration (see Load); relative file
// paths are resolved against baseDir, and lookup reads the environment.
func parse(data []byte, baseDir string, lookup func(string) (string, bool)) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, fmt.Errorf("parse yaml: %w", err)
	}
	c := Default()
	w := walker{lookup: lookup, paths: map[int]string{}}
	if root.Kind != 0 {
		w.walk(&root, reflect.TypeFor[Config](), "")
		if err := root.Decode(c); err != nil {
			var te *yaml.TypeError
			if !errors.As(err, &te) {
				return nil, fmt.Errorf("decode yaml: %w", err)
			}
			for _, msg := range te.Errors {
				w.problems = append(w.problems, w.typeProblem(msg))
			}
		}
	}
	c.ApplyDefaults()
	c.inlineSecrets = w.inline
	l := fileLoader{baseDir: baseDir}
	l.secret("redis.password", &c.Redis.Password, &c.Redis.PasswordFile)
	for _, name := range c.NamespaceNames() {
		ns := c.Namespaces[name]
		if ns == nil {
			continue
		}
		for i, a := range ns.Apps {
			if a != nil {
				l.secret(fmt.Sprintf("namespaces.%s.apps[%d].secret", name, i), &a.Secret, &a.SecretFile)
			}
		}
	}
	l.componentSecrets(c)
	l.secret("login.jwt.signing_key", &c.Login.JWT.SigningKey, &c.Login.JWT.SigningKeyFile)
	l.secret("login.session_key_encryption_key", &c.Login.SessionKeyEncryptionKey, &c.Login.SessionKeyEncryptionKeyFile)
	c.TLS.CertFile = l.resolve(c.TLS.CertFile)
	c.TLS.KeyFile = l.resolve(c.TLS.KeyFile)

	problems := append(w.problems, l.problems...)
	var ve *ValidationError
	if err := c.Validate(); err != nil && !errors.As(err, &ve) {
		return nil, err
	}
	if ve != nil {
		// A key that failed to load (unset ${VAR}, unreadable file) would
		// also fail validation as empty: report it once.
		seen := map[string]bool{}
		for _, p := range problems {
			seen[p.Key] = true
			seen[strings.TrimSuffix(p.Key, "_file")] = true
		}
		for _, p := range ve.Problems {
			if u, ok := w.unset[p.Key]; ok {
				p.Line = u.line
				p.Message += fmt.Sprintf(" (environment variable %s is not set)", u.name)
			}
			if !seen[p.Key] {
				problems = append(problems, p)
			}
		}
	}
	if len(problems) > 0 {
		return nil, &ValidationError{Problems: problems}
	}
	if err := c.Compile(); err != nil {
		return nil, err
	}
	return c, nil
}

// walker expands ${VAR} in scalar values, drops keys whose value is null (so
// they keep their defaults), reports unknown keys and remembers which key path
// sits on which line so that yaml type errors can name their key.
type walker struct {
	lookup   func(string) (string, bool)
	problems []Problem
	paths    map[int]string
	// unset notes, per key path, the unset variables a value expanded from,
	// so that "is empty" from Validate can say why.
	unset map[string]unsetVar
	// inline lists the key paths of secrets written in the file itself
	// (not only ${VAR} references).
	inline []string
}

type unsetVar struct {
	line int
	name string
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func (w *walker) walk(n *yaml.Node, t reflect.Type, path string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			w.walk(c, t, path)
		}
	case yaml.ScalarNode:
		if _, ok := w.paths[n.Line]; !ok {
			w.paths[n.Line] = path
		}
		if t == secretType && n.Value != "" && !strings.Contains(n.Value, "${") {
			w.inline = append(w.inline, path)
		}
		w.expand(n, t, path)
	case yaml.MappingNode:
		if reflect.PointerTo(t).Implements(unmarshalerType) {
			return
		}
		switch t.Kind() {
		case reflect.Struct:
			w.walkStruct(n, t, path)
		case reflect.Map:
			for i := 0; i+1 < len(n.Content); i += 2 {
				w.walk(n.Content[i+1], t.Elem(), join(path, n.Content[i].Value))
			}
		}
	case yaml.SequenceNode:
		if t.Kind() == reflect.Slice && !reflect.PointerTo(t).Implements(unmarshalerType) {
			for i, c := range n.Content {
				w.walk(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
			}
		}
	}
}

func (w *walker) walkStruct(n *yaml.Node, t reflect.Type, path string) {
	fields := map[string]reflect.Type{}
	var names []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		fields[name] = f.Type
		names = append(names, name)
	}
	kept := n.Content[:0:0]
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		ft, ok := fields[k.Value]
		switch {
		case k.Value == "<<":
			// A merge key: yaml.v3 merges it; its content was checked where the anchor was defined.
		case !ok:
			w.problems = append(w.problems, Problem{
				Key:     join(path, k.Value),
				Line:    k.Line,
				Message: "unknown key",
				Fix:     "remove it or correct its spelling; known keys here: " + strings.Join(names, ", "),
			})
			continue
		case v.Kind == yaml.ScalarNode && v.Tag == "!!null" && v.Style&yaml.TaggedStyle == 0:
			continue // "key:" with no value keeps the default
		default:
			w.walk(v, ft, join(path, k.Value))
		}
		kept = append(kept, k, v)
	}
	n.Content = kept
}

// expand replaces ${VAR} references in a scalar. A plain scalar aimed at a
// non-string field is re-resolved after expansion, so "port: ${PORT}" decodes
// as a number; string fields keep the expanded text exactly.
func (w *walker) expand(n *yaml.Node, t reflect.Type, path string) {
	if !strings.Contains(n.Value, "$") {
		return
	}
	out, errs := expandEnv(n.Value, w.lookup, t == secretType)
	if out == "" {
		for _, name := range unsetNames(n.Value, w.lookup) {
			if w.unset == nil {
				w.unset = map[string]unsetVar{}
			}
			w.unset[path] = unsetVar{line: n.Line, name: name}
		}
	}
	for _, e := range errs {
		w.problems = append(w.problems, Problem{Key: path, Line: n.Line, Message: e.msg, Fix: e.fix})
	}
	if out == n.Value {
		return
	}
	n.Value = out
	if n.Style&(yaml.TaggedStyle|yaml.SingleQuotedStyle|yaml.DoubleQuotedStyle|yaml.LiteralStyle|yaml.FoldedStyle) == 0 &&
		t.Kind() != reflect.String {
		n.Tag = ""
	}
}

type expandError struct{ msg, fix string }

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// unsetNames lists the plain ${VAR} references of s whose variable is unset.
func unsetNames(s string, lookup func(string) (string, bool)) []string {
	var names []string
	for _, m := range envRef.FindAllStringSubmatch(s, -1) {
		if _, ok := lookup(m[1]); !ok {
			names = append(names, m[1])
		}
	}
	return names
}

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

var secretType = reflect.TypeFor[Secret]()

// expandEnv implements the ${VAR}, ${VAR:-default} and $$ syntax of Load.
// For a secret, its messages never quote any part of the value: a secret
// that happens to contain "${" must not leak through its error.
func expandEnv(s string, lookup func(string) (string, bool), secret bool) (string, []expandError) {
	var b strings.Builder
	var errs []expandError
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '{':
			end := strings.IndexByte(s[i+2:], '}')
			if end < 0 {
				errs = append(errs, expandError{"unterminated ${ in value", "close it with } or write $$ for a literal $"})
				b.WriteString(s[i:])
				return b.String(), errs
			}
			ref := s[i+2 : i+2+end]
			name, def, hasDef := strings.Cut(ref, ":-")
			name, required := strings.CutSuffix(name, ":?")
			switch v, ok := lookup(name); {
			case !envName.MatchString(name) && secret:
				errs = append(errs, expandError{"invalid environment variable name in a ${...} reference (value not shown: it is a secret)",
					"use letters, digits and _ (e.g. ${WX_SECRET_PROD}), or write $$ for a literal $ in the secret"})
			case !envName.MatchString(name):
				errs = append(errs, expandError{fmt.Sprintf("invalid environment variable name %q in ${%s}", name, ref),
					"use letters, digits and _ (e.g. ${WX_SECRET_PROD}), or write $$ for a literal $"})
			case ok && (v != "" || !hasDef):
				b.WriteString(v)
			case hasDef:
				b.WriteString(def)
			case required:
				errs = append(errs, expandError{fmt.Sprintf("environment variable %s is not set", name),
					fmt.Sprintf("export %s, or write ${%s} to allow it to be empty", name, name)})
			default:
				// Unset expands to "" as in the shell (so that an optional
				// `password: ${REDIS_PASSWORD}`); required values such as app
				// secrets are then reported empty by Validate.
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String(), errs
}

var yamlLine = regexp.MustCompile(`^line (\d+): (.*)$`)

// typeProblem turns one of yaml.v3's type errors into a Problem naming the key.
func (w *walker) typeProblem(msg string) Problem {
	p := Problem{Message: msg, Fix: "write the value with the type shown in the configuration reference (docs/CONFIGURATION.md)"}
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		p.Line, _ = strconv.Atoi(m[1])
		p.Key = w.paths[p.Line]
		p.Message = m[2]
	}
	switch {
	case strings.Contains(p.Message, "time.Duration"):
		p.Fix = "write a Go duration such as 15s, 5m or 2h (a bare number has no unit)"
	case strings.Contains(p.Message, "portion"), strings.Contains(p.Message, "percentage"):
		p.Fix = `write a percentage such as "25%" or a duration such as "30m"`
	}
	return p
}

type fileLoader struct {
	baseDir  string
	problems []Problem
}

func (l *fileLoader) resolve(path string) string {
	if path == "" || l.baseDir == "" || filepath.IsAbs(path) {
		return path
	}
	return filepath.Join(l.baseDir, path)
}

// secret reads *file into *val when it is set. key is the value's key path;
// the file's key path is key + "_file".
func (l *fileLoader) secret(key string, val *Secret, file *string) {
	if *file == "" {
		return
	}
	fileKey := key + "_file"
	if *val != "" {
		l.problems = append(l.problems, Problem{Key: fileKey, Value: *file,
			Message: fmt.Sprintf("both %s and %s are set", key, fileKey),
			Fix:     "keep only one of them"})
		return
	}
	*file = l.resolve(*file)
	data, err := os.ReadFile(*file)
	if err != nil {
		l.problems = append(l.problems, Problem{Key: fileKey, Value: *file,
			Message: "cannot read the file: " + pathErrorText(err),
			Fix:     "check the path and that wxbroker may read it"})
		return
	}
	v := strings.TrimSpace(string(data))
	if v == "" {
		l.problems = append(l.problems, Problem{Key: fileKey, Value: *file,
			Message: "the file is empty", Fix: "write the secret into the file"})
		return
	}
	*val = Secret(v)
}

// pathErrorText drops the path from an *fs.PathError: the key's value already shows it.
func pathErrorText(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// NamespaceNames returns the configured namespace names in sorted order.
func (c *Config) NamespaceNames() []string {
	names := make([]string, 0, len(c.Namespaces))
	for name := range c.Namespaces {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}
