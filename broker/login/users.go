package login

import (
	"context"
	"errors"
	"strconv"
	"time"
)

// A user is a Redis hash at login:user:<id> with the fields
//
//	id, public_id (see publicid.go), unionid, nickname, avatar, created_at, updated_at, last_login_at (unix ms),
//	openid:<appid>  the user's openid in each app,
//	sk:<appid>      the mini program's session_key (sealed),
//	oauth:<appid>   the website OAuth tokens (sealed JSON),
//	phone           the phone number from getuserphonenumber (sealed JSON).
//
// login:openid:<appid>:<openid> and login:unionid:<unionid> index it; the
// unionid links one person's mini-program and website identities.

// Sealed user fields. Their additional data is "<field>|<user id>".
const (
	fieldSessionKey = "sk:"
	fieldOAuth      = "oauth:"
	fieldPhone      = "phone"
)

// user is a loaded user record.
type user struct {
	id     string
	fields map[string]string
}

// identity is what a login flow learned about the user from WeChat.
type identity struct {
	appid, openid, unionid string
	nickname, avatar       string
	// secrets are user fields to store sealed (field name → plaintext).
	secrets map[string]string
}

// users are the user records: created or updated by a login, loaded by
// the routes that show or use them, with their sealed fields.
type users struct {
	store *store
	seal  *sealer
	now   func() time.Time
	// mp and web are the login apps (nil when not configured): a view
	// falls back to the user's openid in the other one.
	mp, web *flowApp
}

// upsertUser creates or updates the user of id.appid/id.openid, linked by
// unionid, and records the login.
func (us *users) upsertUser(ctx context.Context, id identity) (*user, bool, error) {
	uid, created, err := us.store.resolveUser(ctx, id.appid, id.openid, id.unionid)
	if err != nil {
		return nil, false, err
	}
	fields := []string{"openid:" + id.appid, id.openid}
	if id.unionid != "" {
		fields = append(fields, "unionid", id.unionid)
	}
	if id.nickname != "" {
		fields = append(fields, "nickname", id.nickname)
	}
	if id.avatar != "" {
		fields = append(fields, "avatar", id.avatar)
	}
	for f, v := range id.secrets {
		fields = append(fields, f, us.seal.Seal(v, f+"|"+uid))
	}
	all, err := us.store.writeUser(ctx, uid, us.now().UnixMilli(), newPublicID(), fields...)
	if err != nil {
		return nil, false, err
	}
	return &user{id: uid, fields: all}, created, nil
}

var errNoUser = errors.New("login: user not found")

func (us *users) loadUser(ctx context.Context, uid string) (*user, error) {
	m, ok, err := us.store.user(ctx, uid)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, errNoUser
	}
	u := &user{id: uid, fields: m}
	if err := us.ensurePublicID(ctx, u); err != nil {
		return nil, err
	}
	return u, nil
}

// setSecret stores one sealed field of a user.
func (us *users) setSecret(ctx context.Context, uid, field, value string) error {
	return us.store.setUserField(ctx, uid, field, us.seal.Seal(value, field+"|"+uid), us.now().UnixMilli())
}

// secret opens a sealed field; "" when it is not set.
func (us *users) secret(u *user, field string) (string, error) {
	v := u.fields[field]
	if v == "" {
		return "", nil
	}
	return us.seal.Open(v, field+"|"+u.id)
}

// userView is the user as the API shows it: never a secret.
type userView struct {
	ID          string `json:"id"` // the public id: opaque, not sequential
	OpenID      string `json:"openid"`
	Nickname    string `json:"nickname"`
	Avatar      string `json:"avatar"`
	CreatedAt   string `json:"created_at"`
	UpdatedAt   string `json:"updated_at,omitempty"`
	LastLoginAt string `json:"last_login_at,omitempty"`
	PhoneNumber string `json:"phone_number,omitempty"`
}

// view shows u with its openid in appid (else in the other login app).
func (us *users) view(u *user, appid string) *userView {
	openid := u.fields["openid:"+appid]
	for _, a := range []*flowApp{us.mp, us.web} {
		if openid == "" && a != nil {
			openid = u.fields["openid:"+a.appid]
		}
	}
	v := &userView{
		ID: u.fields[fieldPublicID], OpenID: openid, Nickname: u.fields["nickname"], Avatar: u.fields["avatar"],
		CreatedAt: msTime(u.fields["created_at"]), UpdatedAt: msTime(u.fields["updated_at"]),
		LastLoginAt: msTime(u.fields["last_login_at"]),
	}
	if p, err := us.secret(u, fieldPhone); err == nil && p != "" {
		var ph phoneView
		if jsonUnmarshal(p, &ph) == nil {
			v.PhoneNumber = ph.PhoneNumber
		}
	}
	return v
}

// msTime formats unix milliseconds like the seed API: 2024-10-16T12:00:00.000Z.
func msTime(ms string) string {
	n, err := strconv.ParseInt(ms, 10, 64)
	if err != nil || n == 0 {
		return ""
	}
	return time.UnixMilli(n).UTC().Format("2006-01-02T15:04:05.000Z07:00")
}
