package login

import "context"

// Users have two ids. The internal id (a Redis counter) keys their records
// and is never shown; the public id, random and opaque ("u_" and 16
// base64url characters), is what answers and access tokens (sub) carry, so
// they reveal neither how many users there are nor who signed up after whom.
// A user created before public ids existed gets one on first use; access
// tokens issued before then carry the internal id as sub and keep working
// until they expire, because a request's user is found through its refresh
// family (sid), never through sub.

// fieldPublicID is the user field holding the public id.
const fieldPublicID = "public_id"

func newPublicID() string { return "u_" + randomToken(12) }

// ensurePublicID makes sure u has a public id, giving it one (first writer
// wins across replicas) when it has none.
func (us *users) ensurePublicID(ctx context.Context, u *user) error {
	if u.fields[fieldPublicID] != "" {
		return nil
	}
	id, err := us.store.assignPublicID(ctx, u.id, newPublicID())
	if err != nil {
		return err
	}
	u.fields[fieldPublicID] = id
	return nil
}

// publicIDOf returns the public id of the user with internal id uid.
func (us *users) publicIDOf(ctx context.Context, uid string) (string, error) {
	u, err := us.loadUser(ctx, uid)
	if err != nil {
		return "", err
	}
	return u.fields[fieldPublicID], nil
}
