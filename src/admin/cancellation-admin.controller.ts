import {
  BadRequestException,
  Body,
  Controller,
  Get,
  HttpCode,
  Inject,
  NotFoundException,
  Optional,
  Param,
  Post,
  Query,
  ServiceUnavailableException,
  UseGuards,
} from '@nestjs/common';
import type { CanActivate, DynamicModule, Type } from '@nestjs/common';
import { CancellationService } from '../core/cancellation.service.js';
import type { CancellationAdminOptions } from '../module/cancellation.options.js';
import { fail } from '../module/options.validation.js';
import { CancellationRegistry } from '../registry/cancellation-registry.service.js';
import type { InFlightRequest } from '../registry/cancellation-events.types.js';
import { FLEET_REGISTRY } from '../registry/fleet-registry.token.js';
import type { FleetLike } from '../registry/fleet-registry.token.js';

/** A controller path: URL path segments, no parameters or wildcards. */
const ADMIN_PATH = /^\/?[A-Za-z0-9._~-]+(\/[A-Za-z0-9._~-]+)*\/?$/;

/** What `POST <path>/requests/:id/cancel` answers. */
interface CancelResult {
  /** How many requests were cancelled. */
  readonly cancelled: number;
}

/** `?fleet=true`: over every instance (`CancellationFleetModule`), else this one. */
function wantsFleet(fleet: FleetLike | undefined, query: string | undefined): fleet is FleetLike {
  if (query === undefined || query === 'false') return false;
  if (query !== 'true') throw new BadRequestException('"fleet" must be true or false');
  if (fleet === undefined) {
    throw new BadRequestException('?fleet=true needs CancellationFleetModule (nestjs-cancellation/fleet)');
  }
  return true;
}

/** A fleet call that could not reach Redis is answered 503 with its message. */
function unavailable(err: unknown): never {
  if (err instanceof Error && err.name === 'FleetUnavailableError') {
    throw new ServiceUnavailableException(err.message);
  }
  throw err;
}

/**
 * Checks the `admin` option: it must bring a guard, because the controller lists and cancels every
 * user's requests.
 * @internal
 */
export function validateAdminOptions(admin: unknown): CancellationAdminOptions {
  if (typeof admin !== 'object' || admin === null) fail('admin', admin, 'an object with a guard');
  const { guard, path, imports } = admin as Partial<CancellationAdminOptions>;
  const isGuardClass = typeof guard === 'function';
  const isGuardInstance =
    typeof guard === 'object' && guard !== null && typeof (guard as CanActivate).canActivate === 'function';
  if (!isGuardClass && !isGuardInstance) {
    fail(
      'admin.guard',
      guard,
      'a guard class or instance (CanActivate): the admin controller lists and cancels the requests of ' +
        'every client and never runs unguarded',
    );
  }
  if (path !== undefined && (typeof path !== 'string' || !ADMIN_PATH.test(path))) {
    fail('admin.path', path, 'a URL path such as "cancellation" or "admin/requests", without parameters');
  }
  if (imports !== undefined && !Array.isArray(imports)) fail('admin.imports', imports, 'an array of modules');
  for (const key of Object.keys(admin)) {
    if (key !== 'guard' && key !== 'path' && key !== 'imports') {
      throw new TypeError(
        `nestjs-cancellation: unknown option "admin.${key}" (known options: guard, path, imports)`,
      );
    }
  }
  return admin as CancellationAdminOptions;
}

/**
 * The admin controller for these options: `GET <path>/requests` lists the requests in flight,
 * `POST <path>/requests/:id/cancel` cancels one. Built per application, because its path and guard are
 * decorators' arguments.
 * @internal
 */
export function createAdminController(admin: CancellationAdminOptions): Type {
  @Controller(admin.path ?? 'cancellation')
  @UseGuards(admin.guard)
  class CancellationAdminController {
    constructor(
      @Inject(CancellationService) private readonly cancellation: CancellationService,
      @Inject(CancellationRegistry) private readonly registry: CancellationRegistry,
      @Optional() @Inject(FLEET_REGISTRY) private readonly fleet?: FleetLike,
    ) {}

    /** The requests in flight, but for this one; `?fleet=true`: on every instance, each with its id. */
    @Get('requests')
    async list(@Query('fleet') fleet?: string): Promise<InFlightRequest[]> {
      const self = this.cancellation.requestId;
      const all = wantsFleet(this.fleet, fleet)
        ? await this.fleet.inFlight().catch(unavailable)
        : this.registry.inFlight();
      return all.filter((request) => request.id !== self);
    }

    /**
     * Cancels the requests with this id (`kind: 'manual'`); 404 when there is none. `?fleet=true`: wherever
     * it runs in the fleet.
     */
    @Post('requests/:id/cancel')
    @HttpCode(200)
    async cancel(
      @Param('id') id: string,
      @Body() body: unknown,
      @Query('fleet') fleet?: string,
    ): Promise<CancelResult> {
      const message = (body as { message?: unknown } | undefined)?.message;
      if (message !== undefined && (typeof message !== 'string' || message.length > 500)) {
        throw new BadRequestException('"message" must be a string of at most 500 characters');
      }
      const cancelled = wantsFleet(this.fleet, fleet)
        ? await this.fleet.cancel(id, message).catch(unavailable)
        : { cancelled: this.registry.cancel(id, message) };
      if (cancelled.cancelled === 0)
        throw new NotFoundException(`No request in flight has the id ${JSON.stringify(id)}`);
      return cancelled;
    }
  }
  return CancellationAdminController;
}

/**
 * Adds the admin controller (and the modules its guard needs) to the module's definition when `admin` is set.
 * @internal
 */
export function withAdmin(definition: DynamicModule, admin: unknown): DynamicModule {
  if (admin === undefined) return definition;
  const options = validateAdminOptions(admin);
  return {
    ...definition,
    imports: [...(definition.imports ?? []), ...(options.imports ?? [])],
    controllers: [...(definition.controllers ?? []), createAdminController(options)],
  };
}
