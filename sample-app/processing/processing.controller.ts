import { BadRequestException, Body, Controller, HttpCode, HttpStatus, Post } from '@nestjs/common';
import { ProcessingService } from './processing.service.js';
import type { ProcessResult } from './processing.service.js';

const MAX_ITEMS = 50;

@Controller('process')
export class ProcessingController {
  constructor(private readonly processing: ProcessingService) {}

  /** `POST /process` with `{ "items": [...] }` (1 to 50 items, half a second each): answers the result. */
  @Post()
  @HttpCode(HttpStatus.OK)
  process(@Body() body: unknown): Promise<ProcessResult> {
    const items = (body as { items?: unknown } | undefined)?.items;
    if (!Array.isArray(items) || items.length === 0 || items.length > MAX_ITEMS) {
      throw new BadRequestException(`the body must be { "items": [...] } with 1 to ${MAX_ITEMS} items`);
    }
    return this.processing.process(items);
  }
}
