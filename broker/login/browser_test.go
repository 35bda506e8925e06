package login

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// TestWebLoginInHeadlessChromium drives the website QR flow in a real
// browser: /login → WeChat's (simulated) qrconnect page → confirm → back on
// return_to, logged in; the same person on the mini program is the same user.
func TestWebLoginInHeadlessChromium(t *testing.T) {
	chromiumPath, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium not found on PATH: run `make test`, it installs chromium (apt-get install -y chromium chromium-driver)")
	}
	e := newEnv(t)
	e.sim.SetProfile("demo-user", "演示用户", "")

	actx, cancelAlloc := chromedp.NewExecAllocator(t.Context(),
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
	)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	ctx, cancel := context.WithTimeout(bctx, 90*time.Second)
	defer cancel()

	err = chromedp.Do(ctx,
		chromedp.Navigate(e.URL+routeLoginPage),
		chromedp.WaitVisible(chromedp.CSS("#wechat-login")),
		chromedp.Click(chromedp.CSS("#wechat-login")),
		chromedp.WaitVisible(chromedp.CSS("#confirm")), // the simulator's qrconnect page
		chromedp.Click(chromedp.CSS("#confirm")),
		chromedp.WaitVisible(chromedp.CSS("#profile")),
	)
	if err != nil {
		t.Fatalf("browser flow: %v", err)
	}
	location := run(t, ctx, chromedp.Location())
	nickname := run(t, ctx, chromedp.Text(chromedp.CSS("#nickname")))
	userID := run(t, ctx, chromedp.Text(chromedp.CSS("#user-id")))
	res, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{e.URL + "/"}})
	if err != nil {
		t.Fatalf("read cookies: %v", err)
	}
	cookies := res.Cookies
	if location != e.URL+"/login" {
		t.Errorf("landed on %q; want return_to %q", location, e.URL+"/login")
	}
	if strings.TrimSpace(nickname) != "演示用户" {
		t.Errorf("profile nickname = %q; want 演示用户", nickname)
	}
	var session *network.Cookie
	for _, c := range cookies {
		if c.Name == sessionCookie {
			session = c
		}
		if c.Name == stateCookie {
			t.Errorf("state cookie survived the callback: %+v", c)
		}
	}
	if session == nil || !session.HTTPOnly || session.SameSite != network.CookieSameSiteLax {
		t.Fatalf("session cookie = %+v; want HttpOnly, SameSite=Lax", session)
	}

	d := e.miniLogin("demo-user", "", "")
	if d.User.ID != strings.TrimSpace(userID) {
		t.Fatalf("mini-program user id %s; want the website user's %s (same unionid)", d.User.ID, userID)
	}

	// Logging out from the page ends the session.
	err = chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS("#logout")),
		chromedp.WaitVisible(chromedp.CSS("#wechat-login")),
	)
	if err != nil {
		t.Fatalf("logout in the browser: %v", err)
	}
}

func run[T any](t *testing.T, ctx context.Context, a chromedp.Action[T]) T {
	t.Helper()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("browser: %v", err)
	}
	return v
}
