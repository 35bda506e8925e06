package login

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"unicode"
	"unicode/utf8"

	"github.com/labstack/echo/v4"
	"go.uber.org/zap"

	"github.com/wxbroker/wxbroker/metrics"
	"github.com/wxbroker/wxbroker/wechat"
)

// Input limits of the mini-program routes.
const (
	maxCodeLen     = 128
	maxNicknameLen = 64 // runes
	maxAvatarLen   = 1024
	maxCipherLen   = 16 << 10
)

var errMiniProgramOff = &apiError{status: http.StatusNotFound,
	message: "小程序登录未启用 / mini-program login is not enabled on this server"}

// validCode accepts what wx.login and getPhoneNumber hand out: short printable ASCII.
func validCode(code string) bool {
	if code == "" || len(code) > maxCodeLen {
		return false
	}
	for _, r := range code {
		if r <= ' ' || r > '~' {
			return false
		}
	}
	return true
}

func validNickname(n string) bool {
	if !utf8.ValidString(n) || utf8.RuneCountInString(n) > maxNicknameLen {
		return false
	}
	for _, r := range n {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

func validAvatar(a string) bool {
	if a == "" {
		return true
	}
	if len(a) > maxAvatarLen {
		return false
	}
	u, err := url.Parse(a)
	return err == nil && (u.Scheme == "https" || u.Scheme == "http") && u.Host != "" && u.User == nil
}

// miniProgram are the mini-program routes: wx.login, the phone number and
// the legacy decryption of user data.
type miniProgram struct {
	responder
	app      *flowApp // login.miniprogram; nil: the routes answer 404
	wx       *wechat.Client
	tokens   Tokens // the app's access token (getuserphonenumber)
	users    *users
	families *families
	log      *zap.Logger
}

// wxLogin serves POST /api/v1/auth/wx-login {code, nickName, avatarUrl}.
func (mp *miniProgram) wxLogin(c echo.Context) error {
	if mp.app == nil {
		return errMiniProgramOff
	}
	ctx := c.Request().Context()
	var req struct {
		Code      string `json:"code"`
		NickName  string `json:"nickName"`
		AvatarURL string `json:"avatarUrl"`
	}
	if err := decodeBody(c, &req); err != nil {
		mp.count(metrics.FlowMiniProgram, resultInvalid)
		return err
	}
	switch {
	case req.Code == "":
		mp.count(metrics.FlowMiniProgram, resultInvalid)
		return errBadRequest("缺少 code：请先调用 wx.login() / code is required: call wx.login() first")
	case !validCode(req.Code):
		mp.count(metrics.FlowMiniProgram, resultInvalid)
		return errBadRequest("code 格式不正确 / code is malformed")
	case !validNickname(req.NickName):
		mp.count(metrics.FlowMiniProgram, resultInvalid)
		return errBadRequest("nickName 过长或含控制字符 / nickName must be at most 64 characters without control characters")
	case !validAvatar(req.AvatarURL):
		mp.count(metrics.FlowMiniProgram, resultInvalid)
		return errBadRequest("avatarUrl 必须是 http(s) 地址 / avatarUrl must be an http(s) URL of at most 1024 bytes")
	}
	log := mp.log.With(zap.String("namespace", mp.app.ns), zap.String("appid", mp.app.appid))
	sess, err := mp.wx.Code2Session(ctx, mp.app.appid, mp.app.secret.Reveal(), req.Code)
	if err != nil {
		var apiErr *wechat.APIError
		switch {
		case errors.As(err, &apiErr) && apiErr.ConfigError():
			log.Error("jscode2session refused the app's credentials", zap.Int("errcode", apiErr.Code), zap.String("rid", apiErr.RID))
			mp.count(metrics.FlowMiniProgram, metrics.ResultError)
		case errors.As(err, &apiErr) && !userErrcode(apiErr.Code):
			log.Warn("jscode2session failed", zap.Int("errcode", apiErr.Code), zap.String("rid", apiErr.RID))
			mp.count(metrics.FlowMiniProgram, metrics.ResultError)
		case errors.As(err, &apiErr):
			log.Debug("jscode2session refused the code", zap.Int("errcode", apiErr.Code), zap.String("rid", apiErr.RID))
			mp.count(metrics.FlowMiniProgram, resultRejected)
		default:
			log.Warn("jscode2session failed", zap.Error(err))
			mp.count(metrics.FlowMiniProgram, metrics.ResultError)
		}
		return wechatError(err, http.StatusUnauthorized, "微信登录失败")
	}
	u, created, err := mp.users.upsertUser(ctx, identity{
		appid: mp.app.appid, openid: sess.OpenID, unionid: sess.UnionID,
		nickname: req.NickName, avatar: req.AvatarURL,
		secrets: map[string]string{fieldSessionKey + mp.app.appid: sess.SessionKey},
	})
	if err != nil {
		mp.count(metrics.FlowMiniProgram, metrics.ResultError)
		return err
	}
	p, err := mp.families.issue(ctx, u, metrics.FlowMiniProgram)
	if err != nil {
		mp.count(metrics.FlowMiniProgram, metrics.ResultError)
		return err
	}
	mp.count(metrics.FlowMiniProgram, metrics.ResultSuccess)
	if ce := log.Check(zap.DebugLevel, "mini-program login"); ce != nil {
		ce.Write(zap.String("user_id", u.id), zap.Bool("new_user", created))
	}
	return mp.ok(c, "success", mp.families.tokenData(p, mp.users.view(u, mp.app.appid)))
}

// phoneView is the phone number as stored (sealed) and answered.
type phoneView struct {
	PhoneNumber     string `json:"phone_number"`
	PurePhoneNumber string `json:"pure_phone_number"`
	CountryCode     string `json:"country_code"`
}

// wxPhone serves POST /api/v1/auth/wx-phone {code}: getuserphonenumber with
// the broker's own access token; on 40001/42001/40014 the token is reported
// to the broker (conditional refresh) and the call retried exactly once.
func (mp *miniProgram) wxPhone(c echo.Context) error {
	if mp.app == nil {
		return errMiniProgramOff
	}
	ctx := c.Request().Context()
	cl, err := mp.families.authenticate(c)
	if err != nil {
		mp.count(metrics.FlowPhone, resultUnauthorized)
		return err
	}
	var req struct {
		Code string `json:"code"`
	}
	if err := decodeBody(c, &req); err != nil {
		mp.count(metrics.FlowPhone, resultInvalid)
		return err
	}
	if !validCode(req.Code) {
		mp.count(metrics.FlowPhone, resultInvalid)
		return errBadRequest("缺少或错误的 code：请使用 getPhoneNumber 回调中的 code / code is required: use the code from the getPhoneNumber callback")
	}
	log := mp.log.With(zap.String("namespace", mp.app.ns), zap.String("appid", mp.app.appid))
	unavailable := &apiError{status: http.StatusServiceUnavailable,
		message: "微信接口凭证暂不可用，请稍后重试 / no valid WeChat access token right now, try again shortly"}
	tok, err := mp.tokens.AccessToken(mp.app.ns, mp.app.appid)
	if err != nil {
		log.Warn("no access token for getuserphonenumber", zap.Error(err))
		mp.count(metrics.FlowPhone, metrics.ResultError)
		return unavailable
	}
	info, err := mp.wx.UserPhoneNumber(ctx, tok.AccessToken, req.Code)
	var apiErr *wechat.APIError
	if errors.As(err, &apiErr) && apiErr.InvalidCredential() {
		log.Info("getuserphonenumber met an invalid access token, asking the broker for a fresh one",
			zap.Int("errcode", apiErr.Code), zap.Int64("generation", tok.Generation))
		fresh, ierr := mp.tokens.Invalidate(ctx, mp.app.ns, mp.app.appid, tok.AccessToken, metrics.SourceLogin)
		if ierr != nil {
			log.Warn("invalidate access token failed", zap.Error(ierr))
			mp.count(metrics.FlowPhone, metrics.ResultError)
			return unavailable
		}
		info, err = mp.wx.UserPhoneNumber(ctx, fresh.AccessToken, req.Code)
	}
	if err != nil {
		mp.count(metrics.FlowPhone, metrics.ResultError)
		if errors.As(err, &apiErr) {
			lvl := zap.DebugLevel
			if !userErrcode(apiErr.Code) {
				lvl = zap.ErrorLevel // the operator's business: the user only sees generic text
			}
			if ce := log.Check(lvl, "getuserphonenumber failed"); ce != nil {
				ce.Write(zap.Int("errcode", apiErr.Code), zap.String("rid", apiErr.RID))
			}
			if apiErr.InvalidCredential() {
				return unavailable
			}
			return wechatError(err, http.StatusBadRequest, "获取手机号失败")
		}
		log.Warn("getuserphonenumber failed", zap.Error(err))
		return wechatError(err, http.StatusBadGateway, "获取手机号失败")
	}
	if info.Watermark.AppID != "" && info.Watermark.AppID != mp.app.appid {
		log.Error("getuserphonenumber answered for another appid", zap.String("watermark_appid", info.Watermark.AppID))
		mp.count(metrics.FlowPhone, metrics.ResultError)
		return &apiError{status: http.StatusBadGateway, message: "获取手机号失败，请稍后再试 / could not get the phone number, try again later"}
	}
	pv := phoneView{PhoneNumber: info.PhoneNumber, PurePhoneNumber: info.PurePhoneNumber, CountryCode: info.CountryCode}
	b, err := json.Marshal(pv)
	if err != nil {
		return err
	}
	if err := mp.users.setSecret(ctx, cl.uid, fieldPhone, string(b)); err != nil {
		mp.count(metrics.FlowPhone, metrics.ResultError)
		return err
	}
	mp.count(metrics.FlowPhone, metrics.ResultSuccess)
	return mp.ok(c, "success", pv)
}

// wxDecrypt serves the legacy POST /api/v1/auth/wx-decrypt {encryptedData,
// iv}: decrypts with the stored session_key (watermark appid checked).
func (mp *miniProgram) wxDecrypt(c echo.Context) error {
	if mp.app == nil {
		return errMiniProgramOff
	}
	cl, err := mp.families.authenticate(c)
	if err != nil {
		return err
	}
	var req struct {
		EncryptedData string `json:"encryptedData"`
		IV            string `json:"iv"`
	}
	if err := decodeBody(c, &req); err != nil {
		return err
	}
	if req.EncryptedData == "" || req.IV == "" || len(req.EncryptedData) > maxCipherLen || len(req.IV) > 64 {
		return errBadRequest("需要 encryptedData 和 iv / encryptedData and iv are required")
	}
	u, err := mp.users.loadUser(c.Request().Context(), cl.uid)
	if errors.Is(err, errNoUser) {
		return errUnauthorized("用户不存在 / user no longer exists")
	}
	if err != nil {
		return err
	}
	sk, err := mp.users.secret(u, fieldSessionKey+mp.app.appid)
	if err != nil && !errors.Is(err, errUnseal) {
		return err
	}
	if sk == "" { // none stored, or sealed under a rotated AES key: log in again
		return errUnauthorized("没有 session_key，请重新登录 / no session_key for this user: log in with wx.login again")
	}
	plain, err := wechat.DecryptUserData(mp.app.appid, sk, req.EncryptedData, req.IV)
	switch {
	case errors.Is(err, wechat.ErrWatermark):
		return errBadRequest("数据水印 appid 不匹配 / watermark appid does not match this mini program")
	case err != nil:
		return errBadRequest("解密失败：session_key 已更新或数据被篡改，请重新登录后再获取 / decryption failed: the session_key changed or the data was tampered with; log in again and retry")
	}
	if !json.Valid(plain) {
		return errBadRequest("解密结果不是 JSON / decrypted data is not JSON")
	}
	return mp.ok(c, "success", json.RawMessage(plain))
}
