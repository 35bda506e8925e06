package config

import (
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// InlineSecrets returns the key paths of secrets written literally in the
// configuration file rather than as ${VAR} references or *_file paths. Only a
// Config from Load knows them; others return nil.
func (c *Config) InlineSecrets() []string { return append([]string(nil), c.inlineSecrets...) }

// SecretFile is a file holding a secret, with the key that names it.
type SecretFile struct {
	Key  string // e.g. "redis.password_file"
	Path string
}

// SecretFiles returns every configured file that holds a secret: the
// *_file secrets and tls.key_file.
func (c *Config) SecretFiles() []SecretFile {
	var out []SecretFile
	add := func(key, path string) {
		if path != "" {
			out = append(out, SecretFile{Key: key, Path: path})
		}
	}
	add("redis.password_file", c.Redis.PasswordFile)
	for _, ref := range c.Apps() {
		add(fmt.Sprintf("namespaces.%s.apps[%s].secret_file", ref.Namespace, ref.App.AppID), ref.App.SecretFile)
	}
	c.componentSecretFiles(add)
	add("login.jwt.signing_key_file", c.Login.JWT.SigningKeyFile)
	add("login.session_key_encryption_key_file", c.Login.SessionKeyEncryptionKeyFile)
	add("tls.key_file", c.TLS.KeyFile)
	return out
}

// FileModeProblems reports secret files, and the configuration file at path
// when it holds inline secrets, that other users may read. A file is too
// open when it is readable by everyone, or readable by its group while this
// process owns it (a file owned by another user, e.g. a Kubernetes secret
// volume with fsGroup, is read through its group: that group bit is needed).
// The problems are warnings: serve and doctor print them and go on. path may
// be empty (no configuration file).
func FileModeProblems(path string, c *Config) []Problem {
	var out []Problem
	check := func(key, file, what string) {
		fi, err := os.Stat(file)
		if err != nil {
			return // Load already reported unreadable files
		}
		if why := tooOpen(fi); why != "" {
			out = append(out, Problem{Key: key, Value: file,
				Message: fmt.Sprintf("%s is %s (mode %04o)", what, why, fi.Mode().Perm()),
				Fix:     fmt.Sprintf("chmod 600 %s (or 640 with a group only wxbroker is in)", file)})
		}
	}
	for _, f := range c.SecretFiles() {
		check(f.Key, f.Path, "this secret file")
	}
	if inline := c.InlineSecrets(); path != "" && len(inline) > 0 {
		check(inline[0], path, fmt.Sprintf("the configuration file holds %d inline secret(s) and", len(inline)))
	}
	return out
}

// tooOpen says who besides the owner may read fi, "" when nobody should not.
func tooOpen(fi fs.FileInfo) string {
	perm := fi.Mode().Perm()
	if perm&0o004 != 0 {
		return "readable by every user"
	}
	if perm&0o040 == 0 {
		return ""
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Getuid() {
		return "" // we read it through its group
	}
	return "readable by its group"
}
