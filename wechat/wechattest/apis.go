package wechattest

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"mime"
	"mime/multipart"
	"net/http"
	"strconv"
)

// Ordinary server APIs that take an access token, modelled far enough for
// the broker's gateway tests: menu read, temporary media upload and download
// (binary), and the unlimited mini-program code (an image). Each checks the
// token like every WeChat API (41001, 40001, 40014, 42001) and answers
// errors as JSON. The menu read counts as the generic API, as it did before
// it answered a menu; a customer-service message
// (/cgi-bin/message/custom/send) is the generic API itself.
const (
	apiMediaUpload = "media_upload"
	apiMediaGet    = "media_get"
	apiWxaCode     = "getwxacodeunlimit"
)

// maxMedia bounds how many uploaded media the simulator keeps (the oldest
// is dropped first).
const maxMedia = 64

// media is one uploaded temporary media file.
type media struct {
	typ         string
	contentType string
	data        []byte
}

// WeChat's limits for a temporary media file, per type (新增临时素材:
// image 10M, voice 2M, video 10MB, thumb 64KB), each with the errcode WeChat
// answers above it.
var mediaLimits = map[string]struct {
	bytes, code int
}{
	"image": {10 << 20, 40009},
	"voice": {2 << 20, 40010},
	"video": {10 << 20, 40011},
	"thumb": {64 << 10, 40012},
}

// maxMediaBody bounds a media upload's request body: the largest file plus
// room for the multipart framing. A longer body holds a file above its
// type's limit, whatever the type.
const maxMediaBody = 10<<20 + 1<<20

// MediaLimit returns the largest file in bytes that media/upload accepts for
// typ (image, voice, video or thumb), WeChat's own limit; a larger one is
// answered with errcode 40009, 40010, 40011 or 40012 respectively. It
// returns 0 for other types, which media/upload refuses with 40004.
func MediaLimit(typ string) int { return mediaLimits[typ].bytes }

// bodyLimit is the most request body bytes the simulator reads for api.
func bodyLimit(api string) int64 {
	if api == apiMediaUpload {
		return maxMediaBody
	}
	return maxBody
}

// mediaStore is the simulator's uploaded media; guarded by Sim.mu.
type mediaStore struct {
	byID  map[string]*media
	order []string
}

func extraAPI(api string) bool {
	switch api {
	case apiMediaUpload, apiMediaGet, apiWxaCode:
		return true
	}
	return netcheckAPI(api) || componentAPI(api)
}

func extraRoute(path string) (route, bool) {
	switch path {
	case "/cgi-bin/menu/get":
		return route{apiGeneric, "", (*Sim).menuGet}, true
	case "/cgi-bin/media/upload":
		return route{apiMediaUpload, http.MethodPost, (*Sim).mediaUpload}, true
	case "/cgi-bin/media/get":
		return route{apiMediaGet, http.MethodGet, (*Sim).mediaGet}, true
	case "/wxa/getwxacodeunlimit":
		return route{apiWxaCode, http.MethodPost, (*Sim).wxaCode}, true
	}
	if rt, ok := componentRoute(path); ok {
		return rt, true
	}
	return netcheckRoute(path)
}

// menuBody is the menu every app has in the simulator.
const menuBody = `{"menu":{"button":[{"type":"click","name":"Today","key":"V1001_TODAY"},` +
	`{"type":"view","name":"Shop","url":"https://example.com/shop"}]}}`

func (s *Sim) menuGet(c *call) []byte {
	if _, fail := s.checkToken(c, c.q("access_token"), appKinds()...); fail != nil {
		return fail
	}
	return []byte(menuBody)
}

// mediaUpload takes multipart/form-data with the file in field "media" and
// ?type=image|voice|video|thumb, and answers {"type","media_id","created_at"};
// a file above its type's MediaLimit answers the type's size errcode.
func (s *Sim) mediaUpload(c *call) []byte {
	if _, fail := s.checkToken(c, c.q("access_token"), appKinds()...); fail != nil {
		return fail
	}
	typ := c.q("type")
	limit, ok := mediaLimits[typ]
	if !ok {
		return s.errBody(c, 40004, "invalid media type")
	}
	if c.tooLarge {
		return s.errBody(c, limit.code, "")
	}
	_, params, err := mime.ParseMediaType(c.r.Header.Get("Content-Type"))
	if err != nil || params["boundary"] == "" {
		return s.errBody(c, 41005, "media data missing")
	}
	form, err := multipart.NewReader(bytes.NewReader(c.body), params["boundary"]).ReadForm(maxMediaBody)
	if err != nil {
		return s.errBody(c, 41005, "media data missing")
	}
	defer func() { _ = form.RemoveAll() }()
	files := form.File["media"]
	if len(files) == 0 {
		return s.errBody(c, 41005, "media data missing")
	}
	f, err := files[0].Open()
	if err != nil {
		return s.errBody(c, -1, "")
	}
	defer f.Close()
	var data bytes.Buffer
	if _, err := data.ReadFrom(f); err != nil {
		return s.errBody(c, -1, "")
	}
	if data.Len() > limit.bytes {
		return s.errBody(c, limit.code, "")
	}
	ct := files[0].Header.Get("Content-Type")
	if ct == "" || ct == "application/octet-stream" {
		ct = http.DetectContentType(data.Bytes())
	}
	id := rand.Text()
	if s.media.byID == nil {
		s.media.byID = map[string]*media{}
	}
	if len(s.media.order) >= maxMedia {
		delete(s.media.byID, s.media.order[0])
		s.media.order = s.media.order[1:]
	}
	s.media.byID[id] = &media{typ: typ, contentType: ct, data: data.Bytes()}
	s.media.order = append(s.media.order, id)
	body, _ := json.Marshal(struct {
		Type      string `json:"type"`
		MediaID   string `json:"media_id"`
		CreatedAt int64  `json:"created_at"`
	}{typ, id, s.now().Unix()})
	return body
}

// mediaGet answers the uploaded bytes with their Content-Type, or 40007.
func (s *Sim) mediaGet(c *call) []byte {
	if _, fail := s.checkToken(c, c.q("access_token"), appKinds()...); fail != nil {
		return fail
	}
	m, ok := s.media.byID[c.q("media_id")]
	if !ok {
		return s.errBody(c, 40007, "invalid media_id")
	}
	c.contentType = m.contentType
	return m.data
}

// wxaCode answers a PNG for {"scene", "page", "width"}: 40097 without scene.
// The image is a fixed PNG header followed by the scene, so tests can tell
// codes apart.
func (s *Sim) wxaCode(c *call) []byte {
	if _, fail := s.checkToken(c, c.q("access_token"), appKinds()...); fail != nil {
		return fail
	}
	scene := c.field("scene")
	if !c.jsonOK || scene == "" || len(scene) > 32 {
		return s.errBody(c, 40097, "")
	}
	c.contentType = "image/png"
	png := []byte("\x89PNG\r\n\x1a\n")
	png = append(png, "wxacode:"+scene+":"+strconv.Itoa(len(scene))...)
	return png
}

// MediaUploaded returns how many media files the simulator holds.
func (s *Sim) MediaUploaded() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.media.byID)
}
