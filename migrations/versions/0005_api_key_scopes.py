"""api_keys: a scope (providers, user patterns, operations), an expiry, and the previous secret
that keeps working for a grace period after a rotation

Revision ID: 0005
Revises: 0003
Create Date: 2026-12-10 10:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0005'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('providers', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('users', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('operations', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('previous_key_hash', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('previous_prefix', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('previous_expires_at', sa.DateTime(timezone=True),
                                      nullable=True))
        batch_op.create_unique_constraint(batch_op.f('uq_api_keys_previous_key_hash'),
                                          ['previous_key_hash'])


def downgrade():
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_api_keys_previous_key_hash'), type_='unique')
        for column in ('previous_expires_at', 'previous_prefix', 'previous_key_hash',
                       'expires_at', 'operations', 'users', 'providers'):
            batch_op.drop_column(column)
