// Command logindev serves the login endpoints against the WeChat simulator
// and an in-memory Redis (miniredis), for the node tests of miniprogram/
// when `wxbroker dev` is not at hand. It prints one JSON line
// {"login_url","sim_url","appid"} on stdout and runs until stdin closes or
// it receives SIGINT/SIGTERM.
package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/wxbroker/wxbroker/broker"
	"github.com/wxbroker/wxbroker/broker/login"
	"github.com/wxbroker/wxbroker/config"
	"github.com/wxbroker/wxbroker/metrics"
	"github.com/wxbroker/wxbroker/wechat"
	"github.com/wxbroker/wxbroker/wechat/wechattest"
)

const (
	mpAppID  = "wx1111111111111111"
	mpSecret = "mpsecret00112233445566778899aabb"
	ns       = "dev"
)

func main() { os.Exit(run()) }

func run() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() { // the parent test closes stdin (or dies): stop
		_, _ = io.Copy(io.Discard, os.Stdin)
		stop()
	}()
	if err := serve(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "logindev:", err)
		return 1
	}
	return 0
}

func serve(ctx context.Context) error {
	sim := wechattest.NewServer(wechattest.Options{})
	defer sim.Close()
	sim.AddApp(mpAppID, mpSecret)
	mr, err := miniredis.Run()
	if err != nil {
		return err
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	wx, err := wechat.New(wechat.Options{BaseURL: sim.URL})
	if err != nil {
		return err
	}
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return err
	}
	aes := make([]byte, 32)
	_, _ = rand.Read(aes)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	cfg := config.Default()
	cfg.PublicListen = ln.Addr().String()
	cfg.Redis.Addrs = []string{mr.Addr()}
	cfg.WeChat.BaseURL = sim.URL
	cfg.Namespaces = map[string]*config.Namespace{ns: {Apps: []*config.App{
		{AppID: mpAppID, Secret: mpSecret, Kind: config.KindMiniProgram, TokenMode: config.ModeClassic},
	}}}
	cfg.Login.JWT.SigningKey = config.Secret(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	cfg.Login.SessionKeyEncryptionKey = config.Secret(base64.StdEncoding.EncodeToString(aes))
	cfg.Login.MiniProgram = config.LoginApp{Namespace: ns, AppID: mpAppID}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	srv, err := login.New(login.Options{
		Config: cfg, Redis: rdb, WeChat: wx, Tokens: &tokens{wx: wx},
		Logger: zap.NewNop(), Metrics: metrics.New(prometheus.NewRegistry()),
	})
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	defer hs.Close()
	line, _ := json.Marshal(map[string]string{"login_url": "http://" + ln.Addr().String(), "sim_url": sim.URL, "appid": mpAppID})
	fmt.Println(string(line))
	<-ctx.Done()
	return nil
}

// tokens fetches classic tokens from the simulator, standing in for the broker.
type tokens struct {
	wx  *wechat.Client
	mu  sync.Mutex
	cur string
}

func (t *tokens) AccessToken(_, _ string) (broker.Token, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cur == "" {
		tok, err := t.wx.Token(context.Background(), mpAppID, mpSecret)
		if err != nil {
			return broker.Token{}, err
		}
		t.cur = tok.AccessToken
	}
	return broker.Token{AccessToken: t.cur, ExpiresAt: time.Now().Add(time.Hour)}, nil
}

func (t *tokens) Invalidate(ctx context.Context, _, _, failed, _ string) (broker.Token, error) {
	t.mu.Lock()
	if failed == t.cur {
		t.cur = ""
	}
	t.mu.Unlock()
	return t.AccessToken("", "")
}
