package config

// App returns the app appid of namespace ns.
func (c *Config) App(ns, appid string) (*App, bool) {
	return c.Namespaces[ns].app(appid)
}

func (n *Namespace) app(appid string) (*App, bool) {
	if n == nil {
		return nil, false
	}
	for _, a := range n.Apps {
		if a != nil && a.AppID == appid {
			return a, true
		}
	}
	return nil, false
}

// AppRef is an app together with the namespace that configures it.
type AppRef struct {
	Namespace string
	App       *App
}

// Apps returns every configured app, ordered by namespace name and then by
// position in the file.
func (c *Config) Apps() []AppRef {
	var refs []AppRef
	for _, name := range c.NamespaceNames() {
		ns := c.Namespaces[name]
		if ns == nil {
			continue
		}
		for _, a := range ns.Apps {
			if a != nil {
				refs = append(refs, AppRef{Namespace: name, App: a})
			}
		}
	}
	return refs
}
