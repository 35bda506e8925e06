package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"

	"github.com/wxbroker/wxbroker/wechat/msgcrypt"
)

// Component is an Open Platform third-party platform ("component") managed
// in a namespace: its AppID and AppSecret mint the component_access_token,
// and its message token and EncodingAESKey verify and decrypt the pushes
// WeChat sends to its authorization-event URL. Each secret may come from a
// *_file instead.
type Component struct {
	AppID              string `yaml:"component_appid"`
	Secret             Secret `yaml:"component_secret"`
	SecretFile         string `yaml:"component_secret_file"`
	Token              Secret `yaml:"token"`
	TokenFile          string `yaml:"token_file"`
	EncodingAESKey     Secret `yaml:"encoding_aes_key"`
	EncodingAESKeyFile string `yaml:"encoding_aes_key_file"`
}

// OpenPlatform holds the settings shared by every component.
type OpenPlatform struct {
	// RefreshTokenEncryptionKey is the base64 encoding of a 32-byte key
	// (openssl rand -base64 32): authorizer refresh tokens, which WeChat
	// cannot issue again without the merchant, are stored in Redis
	// encrypted with it (AES-256-GCM). Required when a component is
	// configured.
	RefreshTokenEncryptionKey     Secret `yaml:"refresh_token_encryption_key"`
	RefreshTokenEncryptionKeyFile string `yaml:"refresh_token_encryption_key_file"`
}

// RefreshTokenKey decodes open_platform.refresh_token_encryption_key: the
// base64 encoding of a 32-byte AES-256 key. The error's text completes the
// key's name and never shows the value.
func (o *OpenPlatform) RefreshTokenKey() ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(o.RefreshTokenEncryptionKey.Reveal())
	if err != nil || len(b) != 32 {
		return nil, errors.New("is not the base64 encoding of 32 bytes (an AES-256 key)")
	}
	return b, nil
}

// ComponentRef is a component together with the namespace that configures it.
type ComponentRef struct {
	Namespace string
	Component *Component
}

// Components returns every configured component, ordered by namespace name
// and then by position in the file.
func (c *Config) Components() []ComponentRef {
	var refs []ComponentRef
	for _, name := range c.NamespaceNames() {
		ns := c.Namespaces[name]
		if ns == nil {
			continue
		}
		for _, comp := range ns.Components {
			if comp != nil {
				refs = append(refs, ComponentRef{Namespace: name, Component: comp})
			}
		}
	}
	return refs
}

// Component returns the component componentAppID of namespace ns.
func (c *Config) Component(ns, componentAppID string) (*Component, bool) {
	n := c.Namespaces[ns]
	if n == nil {
		return nil, false
	}
	for _, comp := range n.Components {
		if comp != nil && comp.AppID == componentAppID {
			return comp, true
		}
	}
	return nil, false
}

// Crypter returns the message crypter of the component's event URL. The
// component must be valid (Validate).
func (comp *Component) Crypter() (*msgcrypt.Crypter, error) {
	c, err := msgcrypt.New(comp.Token.Reveal(), comp.EncodingAESKey.Reveal(), comp.AppID)
	if err != nil {
		return nil, fmt.Errorf("config: component %s: %w", comp.AppID, err)
	}
	return c, nil
}

// messageTokenPattern is what WeChat's console accepts as a message token:
// 3 to 32 letters and digits.
var messageTokenPattern = regexp.MustCompile(`^[A-Za-z0-9]{3,32}$`)

// componentSecrets reads the *_file secrets of every component and of
// open_platform.
func (l *fileLoader) componentSecrets(c *Config) {
	for _, name := range c.NamespaceNames() {
		ns := c.Namespaces[name]
		if ns == nil {
			continue
		}
		for i, comp := range ns.Components {
			if comp == nil {
				continue
			}
			key := fmt.Sprintf("namespaces.%s.components[%d].", name, i)
			l.secret(key+"component_secret", &comp.Secret, &comp.SecretFile)
			l.secret(key+"token", &comp.Token, &comp.TokenFile)
			l.secret(key+"encoding_aes_key", &comp.EncodingAESKey, &comp.EncodingAESKeyFile)
		}
	}
	l.secret("open_platform.refresh_token_encryption_key", &c.OpenPlatform.RefreshTokenEncryptionKey,
		&c.OpenPlatform.RefreshTokenEncryptionKeyFile)
}

// componentSecretFiles adds the *_file secrets of the components and of
// open_platform to SecretFiles.
func (c *Config) componentSecretFiles(add func(key, path string)) {
	for _, ref := range c.Components() {
		key := fmt.Sprintf("namespaces.%s.components[%s].", ref.Namespace, ref.Component.AppID)
		add(key+"component_secret_file", ref.Component.SecretFile)
		add(key+"token_file", ref.Component.TokenFile)
		add(key+"encoding_aes_key_file", ref.Component.EncodingAESKeyFile)
	}
	add("open_platform.refresh_token_encryption_key_file", c.OpenPlatform.RefreshTokenEncryptionKeyFile)
}

// components validates every namespace's components and open_platform.
// appSeen maps the appids of apps to the key of their entry.
func (v *validator) components(c *Config, appSeen map[string]string) {
	seen := map[string]string{} // component appid → key of its first occurrence
	configured := false
	for _, name := range c.NamespaceNames() {
		ns := c.Namespaces[name]
		if ns == nil {
			continue
		}
		for i, comp := range ns.Components {
			configured = true
			v.component(fmt.Sprintf("namespaces.%s.components[%d]", name, i), comp, seen, appSeen)
		}
	}
	o := &c.OpenPlatform
	key := "open_platform.refresh_token_encryption_key"
	if o.RefreshTokenEncryptionKeyFile != "" {
		key += "_file"
	}
	switch {
	case o.RefreshTokenEncryptionKey == "" && o.RefreshTokenEncryptionKeyFile == "":
		if configured {
			v.add("open_platform.refresh_token_encryption_key_file", "", "is empty, but components are configured",
				"create a key with: openssl rand -base64 32 > refresh-token.key, and set refresh_token_encryption_key_file to its path "+
					"(authorizer refresh tokens are stored encrypted with it; keep it: without it they cannot be read)")
		}
	case o.RefreshTokenEncryptionKey != "":
		if _, err := o.RefreshTokenKey(); err != nil {
			v.add(key, o.RefreshTokenEncryptionKey.String(), err.Error(), "create a key with: openssl rand -base64 32")
		}
	}
}

func (v *validator) component(key string, comp *Component, seen, appSeen map[string]string) {
	if comp == nil {
		v.add(key, "", "is empty", "give the component a component_appid, component_secret, token and encoding_aes_key, or remove the entry")
		return
	}
	switch {
	case comp.AppID == "":
		v.add(key+".component_appid", "", "is empty", "copy the third-party platform's AppID (wx...) from the Open Platform console")
	case !appIDPattern.MatchString(comp.AppID):
		v.add(key+".component_appid", comp.AppID, `must be "wx" followed by 16 lowercase hex digits`,
			"copy the AppID from the Open Platform console (第三方平台 → 开发资料)")
	case seen[comp.AppID] != "":
		v.add(key+".component_appid", comp.AppID, "is configured twice (first at "+seen[comp.AppID]+
			"): WeChat pushes one ticket stream to one event URL, and two schedules would invalidate each other's component tokens",
			"configure the component once and let clients of other namespaces read it through an allow pattern")
	case appSeen[comp.AppID] != "":
		v.add(key+".component_appid", comp.AppID, "is also configured as an app (at "+appSeen[comp.AppID]+")",
			"a third-party platform's AppID is not an official account or mini program: remove the app entry")
	default:
		seen[comp.AppID] = key
	}
	if comp.Secret == "" && comp.SecretFile == "" {
		v.add(key+".component_secret", "", "is empty",
			"set component_secret (e.g. ${WX_COMPONENT_SECRET}) or component_secret_file to the platform's AppSecret")
	}
	tokenKey := key + ".token"
	if comp.TokenFile != "" {
		tokenKey += "_file"
	}
	switch {
	case comp.Token == "" && comp.TokenFile == "":
		v.add(key+".token", "", "is empty",
			"set token (or token_file) to the message verification token (消息校验Token) of the platform's authorization-event URL")
	case comp.Token != "" && !messageTokenPattern.MatchString(comp.Token.Reveal()):
		v.add(tokenKey, comp.Token.String(), "must be 3 to 32 letters and digits, as WeChat's console requires",
			"copy the message verification token (消息校验Token) from the Open Platform console")
	}
	aesKey := key + ".encoding_aes_key"
	if comp.EncodingAESKeyFile != "" {
		aesKey += "_file"
	}
	switch {
	case comp.EncodingAESKey == "" && comp.EncodingAESKeyFile == "":
		v.add(key+".encoding_aes_key", "", "is empty",
			"set encoding_aes_key (or encoding_aes_key_file) to the message decryption key (消息加解密Key, 43 characters) from the Open Platform console")
	case comp.EncodingAESKey != "":
		if _, err := msgcrypt.ParseKey(comp.EncodingAESKey.Reveal()); err != nil {
			msg := "must be 43 characters of base64 (A-Z, a-z, 0-9, + and /)"
			if n := len(comp.EncodingAESKey.Reveal()); n != msgcrypt.KeyLen {
				msg += fmt.Sprintf("; it has %d", n)
			}
			v.add(aesKey, comp.EncodingAESKey.String(), msg,
				"copy the message decryption key (消息加解密Key) from the Open Platform console; no trailing \"=\"")
		}
	}
}
