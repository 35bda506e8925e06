package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/wxbroker/wxbroker/wechat/wechattest"
)

const (
	simSynopsis = "[--listen ADDR] [--app APPID:SECRET]... [--token-ttl D] [--overlap D] [--ticket-push-interval D]"
	simSummary  = "run the WeChat simulator as a standalone server for your own tests"
)

// demoApps are what `wxbroker sim` accepts when no --app is given.
var demoApps = []simApp{
	{AppID: "wx00000000000000a1", Secret: "demo-secret-miniprogram"},
	{AppID: "wx00000000000000b2", Secret: "demo-secret-official-account"},
}

type simApp struct{ AppID, Secret string }

// appFlags collects repeated --app APPID:SECRET flags.
type appFlags []simApp

func (a *appFlags) String() string {
	ids := make([]string, len(*a))
	for i, app := range *a {
		ids[i] = app.AppID
	}
	return strings.Join(ids, ",")
}

func (a *appFlags) Set(v string) error {
	id, secret, ok := strings.Cut(v, ":")
	if !ok || id == "" || secret == "" {
		return errors.New("want APPID:SECRET, e.g. wx00000000000000a1:my-secret")
	}
	*a = append(*a, simApp{AppID: id, Secret: secret})
	return nil
}

func simCommand() command {
	return command{synopsis: simSynopsis, summary: simSummary, run: runSim}
}

func runSim(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("sim", simSynopsis, simSummary, stderr)
	listen := fs.String("listen", "127.0.0.1:9090", "address to serve on (port 0 picks a free port)")
	var apps appFlags
	fs.Var(&apps, "app", "an app the simulator accepts, as APPID:SECRET (repeatable; default: two demo apps)")
	ttl := fs.Duration("token-ttl", 7200*time.Second, "lifetime of access tokens")
	overlap := fs.Duration("overlap", 300*time.Second, "how long the previous classic token stays valid after a new fetch")
	pushEvery := fs.Duration("ticket-push-interval", 10*time.Minute,
		"how often component_verify_ticket is pushed to the event URL of each component registered with POST /sim/components")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return exitUsage
	}
	if *ttl <= 0 || *overlap < 0 || *pushEvery <= 0 {
		fmt.Fprintln(stderr, "wxbroker sim: --token-ttl and --ticket-push-interval must be positive and --overlap not negative")
		return exitUsage
	}
	demo := len(apps) == 0
	if demo {
		apps = demoApps
	}
	sim := wechattest.New(wechattest.Options{TokenTTL: *ttl, Overlap: *overlap, TicketPushInterval: *pushEvery})
	for _, a := range apps {
		sim.AddApp(a.AppID, a.Secret)
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(stderr, "wxbroker sim: %v\n", err)
		return exitFailure
	}
	srv := &http.Server{Handler: sim, ReadHeaderTimeout: 10 * time.Second}
	printSimBanner(stdout, "http://"+ln.Addr().String(), apps, demo, *ttl, *overlap)

	pushCtx, stopPushes := context.WithCancel(ctx)
	defer stopPushes()
	go sim.RunPushes(pushCtx) // Open Platform ticket pushes (POST /sim/components)

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	select {
	case err := <-serveErr:
		fmt.Fprintf(stderr, "wxbroker sim: %v\n", err)
		return exitFailure
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		fmt.Fprintf(stderr, "wxbroker sim: shutdown: %v\n", err)
		return exitFailure
	}
	fmt.Fprintln(stdout, "simulator stopped")
	return exitOK
}

func printSimBanner(w io.Writer, url string, apps []simApp, demo bool, ttl, overlap time.Duration) {
	fmt.Fprintf(w, "WeChat simulator listening on %s (token lifetime %s, classic overlap %s)\n\n", url, ttl, overlap)
	if demo {
		fmt.Fprintln(w, "Demo apps it accepts (appid:secret):")
	} else {
		fmt.Fprintln(w, "Apps it accepts:")
	}
	for _, a := range apps {
		if demo {
			fmt.Fprintf(w, "  %s:%s\n", a.AppID, a.Secret)
		} else {
			fmt.Fprintf(w, "  %s\n", a.AppID)
		}
	}
	a := apps[0]
	secret := a.Secret
	if !demo {
		secret = "SECRET"
	}
	fmt.Fprintf(w, `
Try it:
  # stable access token (getStableAccessToken)
  curl -s -X POST %[1]s/cgi-bin/stable_token -d '{"grant_type":"client_credential","appid":"%[2]s","secret":"%[3]s"}'
  # classic access token: each fetch supersedes the previous token after the overlap
  curl -s '%[1]s/cgi-bin/token?grant_type=client_credential&appid=%[2]s&secret=%[3]s'
  # any other API checks the token: errcode 0, 40001 once superseded, 42001 once expired
  curl -s '%[1]s/cgi-bin/get_api_domain_ip?access_token=ACCESS_TOKEN'
  # what the simulator saw
  curl -s %[1]s/sim/stats

Point your WeChat client's API base URL at %[1]s. Stop with Ctrl-C.
`, url, a.AppID, secret)
}
