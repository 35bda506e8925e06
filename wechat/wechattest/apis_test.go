package wechattest

import (
	"bytes"
	"mime/multipart"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// upload posts size bytes as the "media" file of a media/upload of typ.
func upload(t *testing.T, srv *Server, tok, typ string, size int) reply {
	t.Helper()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	fw, err := mw.CreateFormFile("media", "f.bin")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fw.Write(bytes.Repeat([]byte{0xA5}, size)); err != nil {
		t.Fatal(err)
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	q := url.Values{"access_token": {tok}, "type": {typ}}
	resp, err := http.Post(srv.URL+"/cgi-bin/media/upload?"+q.Encode(), mw.FormDataContentType(), &body)
	if err != nil {
		t.Fatalf("POST media/upload: %v", err)
	}
	return decode(t, resp)
}

// TestMediaUploadLimits: media/upload takes files up to WeChat's limit per
// type (image and video 10 MiB, voice 2 MiB, thumb 64 KiB) and answers the
// type's errcode above it. Before, every request body was cut at 1 MiB, so
// a 3 MiB image answered 41005 "media data missing".
func TestMediaUploadLimits(t *testing.T) {
	srv, _ := newTest(t, Options{})
	tok := classic(t, srv, testApp, testSecret)
	tests := []struct {
		typ  string
		size int
		code int
	}{
		{"image", 3 << 20, 0},
		{"image", MediaLimit("image"), 0},
		{"image", MediaLimit("image") + 1, 40009},
		{"image", 12 << 20, 40009}, // beyond what the simulator reads at all
		{"video", MediaLimit("video"), 0},
		{"video", MediaLimit("video") + 1, 40011},
		{"voice", MediaLimit("voice"), 0},
		{"voice", MediaLimit("voice") + 1, 40010},
		{"thumb", MediaLimit("thumb"), 0},
		{"thumb", MediaLimit("thumb") + 1, 40012},
	}
	for _, tt := range tests {
		r := upload(t, srv, tok, tt.typ, tt.size)
		if r.errcode() != tt.code {
			t.Errorf("upload %s of %d bytes: %v; want errcode %d", tt.typ, tt.size, r, tt.code)
			continue
		}
		if tt.code == 0 && r.str("media_id") == "" {
			t.Errorf("upload %s of %d bytes: %v; want a media_id", tt.typ, tt.size, r)
		}
		if tt.code != 0 && !strings.Contains(r.str("errmsg"), "invalid "+tt.typ+" size") {
			t.Errorf("upload %s of %d bytes: errmsg %q; want \"invalid %s size\"", tt.typ, tt.size, r.str("errmsg"), tt.typ)
		}
	}
	for typ, n := range map[string]int{"image": 10 << 20, "video": 10 << 20, "voice": 2 << 20, "thumb": 64 << 10, "file": 0} {
		if got := MediaLimit(typ); got != n {
			t.Errorf("MediaLimit(%q) = %d; want %d", typ, got, n)
		}
	}
}

// TestOtherBodiesLimited: any other API reads at most 1 MiB and answers a
// larger body with 45002 instead of parsing a cut one.
func TestOtherBodiesLimited(t *testing.T) {
	srv, _ := newTest(t, Options{})
	tok := classic(t, srv, testApp, testSecret)
	big := `{"touser":"o1","msgtype":"text","text":{"content":"` + strings.Repeat("x", 1<<20) + `"}}`
	resp, err := http.Post(srv.URL+"/cgi-bin/message/custom/send?access_token="+tok, "application/json", strings.NewReader(big))
	if err != nil {
		t.Fatal(err)
	}
	wantCode(t, "custom/send of 1 MiB", decode(t, resp), 45002)
}
