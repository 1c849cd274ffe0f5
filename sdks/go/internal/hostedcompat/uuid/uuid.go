// Package uuid is a stand-in for github.com/google/uuid, just enough for the hosted SDK's
// examples to compile in this dependency-free module: New().String() is a random UUID.
package uuid

import (
	"crypto/rand"
	"fmt"
)

// UUID is a random (version 4) UUID.
type UUID [16]byte

// New draws a UUID.
func New() UUID {
	var u UUID
	if _, err := rand.Read(u[:]); err != nil {
		panic(err)
	}
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return u
}

func (u UUID) String() string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}
