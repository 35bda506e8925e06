package config_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/wxbroker/wxbroker/config"
)

// writeExample writes a configuration file for an example and returns its
// path and a function that removes it.
func writeExample(yaml string) (string, func()) {
	dir, err := os.MkdirTemp("", "wxbroker-config-example")
	if err != nil {
		panic(err)
	}
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		panic(err)
	}
	return path, func() { _ = os.RemoveAll(dir) }
}

func ExampleLoad() {
	path, done := writeExample(`
redis: {addrs: ["127.0.0.1:6379"]}
namespaces:
  prod:
    apps:
      - {appid: wx04a7af67c8f47620, secret: "s3cr3t", kind: miniprogram}
`)
	defer done()
	c, err := config.Load(path)
	if err != nil {
		fmt.Println(err)
		return
	}
	app, _ := c.App("prod", "wx04a7af67c8f47620")
	fmt.Println(app.Kind, app.TokenMode, app.Secret, c.Refresh.BeforeExpiry, c.Leader.LockTTL)
	// Output: miniprogram stable <secret> 25% 15s
}

func ExampleValidationError() {
	path, done := writeExample(`
redis: {addrs: ["127.0.0.1:6379"]}
leader: {lock_ttl: 10s, renew_interval: 5s}
namespaces:
  prod:
    apps:
      - {appid: wx123, secret: "s3cr3t", kind: miniprogram}
`)
	defer done()
	_, err := config.Load(path)
	var ve *config.ValidationError
	if errors.As(err, &ve) {
		for _, p := range ve.Problems {
			fmt.Println(p.Key)
		}
		fmt.Println(ve)
	}
	// Output:
	// leader.renew_interval
	// namespaces.prod.apps[0].appid
	// invalid configuration (2 problems):
	//   leader.renew_interval = "5s": must be less than half of leader.lock_ttl (10s), so one missed renewal does not lose the lock; fix: set renew_interval below 5s (e.g. a third of lock_ttl) or raise lock_ttl
	//   namespaces.prod.apps[0].appid = "wx123": must be "wx" followed by 16 lowercase hex digits; fix: copy the AppID from the WeChat admin console (开发管理 → 开发设置)
}
